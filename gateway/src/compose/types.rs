//! What the executor and the limits need to know about the public schema:
//! kinds, field types and possible types, by name.

use graphql_tools::parser::schema::{Definition, Document, Type, TypeDefinition};

// Looked up for every field of every response: a fast hasher, randomly
// seeded (the names looked up come from clients' operations).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The kind of a named type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeKind {
    Scalar,
    Object,
    Interface,
    Union,
    Enum,
    InputObject,
}

/// One named type of the public schema.
#[derive(Debug)]
pub(crate) struct TypeInfo {
    pub(crate) kind: TypeKind,
    pub(crate) fields: HashMap<String, Type<'static, String>>,
    /// Object types a value of this type may be (itself for an object).
    pub(crate) possible: HashSet<String>,
}

/// Kinds, fields and possible types of every named type.
#[derive(Debug, Default)]
pub(crate) struct TypeIndex {
    types: HashMap<String, TypeInfo>,
    pub(crate) query: String,
    pub(crate) mutation: Option<String>,
    pub(crate) subscription: Option<String>,
}

impl TypeIndex {
    pub(crate) fn new(document: &Document<'static, String>) -> Self {
        let mut index = Self {
            query: "Query".to_owned(),
            ..Self::default()
        };
        let mut implementations: Vec<(String, String)> = Vec::new();
        let mut explicit_mutation = None;
        let mut explicit_subscription = None;
        for definition in &document.definitions {
            match definition {
                Definition::SchemaDefinition(schema) => {
                    if let Some(query) = &schema.query {
                        index.query = query.clone();
                    }
                    explicit_mutation = schema.mutation.clone();
                    explicit_subscription = schema.subscription.clone();
                }
                Definition::TypeDefinition(definition) => {
                    let (name, info) = match definition {
                        TypeDefinition::Scalar(t) => (t.name.clone(), info(TypeKind::Scalar)),
                        TypeDefinition::Enum(t) => (t.name.clone(), info(TypeKind::Enum)),
                        TypeDefinition::InputObject(t) => {
                            (t.name.clone(), info(TypeKind::InputObject))
                        }
                        TypeDefinition::Object(t) => {
                            let mut i = info(TypeKind::Object);
                            i.fields = fields(&t.fields);
                            i.possible.insert(t.name.clone());
                            for interface in &t.implements_interfaces {
                                implementations.push((interface.clone(), t.name.clone()));
                            }
                            (t.name.clone(), i)
                        }
                        TypeDefinition::Interface(t) => {
                            let mut i = info(TypeKind::Interface);
                            i.fields = fields(&t.fields);
                            (t.name.clone(), i)
                        }
                        TypeDefinition::Union(t) => {
                            let mut i = info(TypeKind::Union);
                            i.possible = t.types.iter().cloned().collect();
                            (t.name.clone(), i)
                        }
                    };
                    index.types.insert(name, info);
                }
                Definition::TypeExtension(_) | Definition::DirectiveDefinition(_) => {}
            }
        }
        for (interface, object) in implementations {
            if let Some(info) = index.types.get_mut(&interface) {
                info.possible.insert(object);
            }
        }
        index.mutation = explicit_mutation.or_else(|| {
            index
                .types
                .contains_key("Mutation")
                .then(|| "Mutation".to_owned())
        });
        index.subscription = explicit_subscription.or_else(|| {
            index
                .types
                .contains_key("Subscription")
                .then(|| "Subscription".to_owned())
        });
        index
    }

    /// The declared type of `parent.field`.
    pub(crate) fn field_type(&self, parent: &str, field: &str) -> Option<&Type<'static, String>> {
        self.types.get(parent)?.fields.get(field)
    }

    /// Whether an object of type `object` satisfies the type condition `condition`.
    pub(crate) fn satisfies(&self, object: &str, condition: &str) -> bool {
        object == condition
            || self
                .types
                .get(condition)
                .is_some_and(|info| info.possible.contains(object))
    }

    /// Whether `name` is an interface or a union.
    pub(crate) fn is_abstract(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|info| matches!(info.kind, TypeKind::Interface | TypeKind::Union))
    }

    pub(crate) fn is_leaf(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_none_or(|info| matches!(info.kind, TypeKind::Scalar | TypeKind::Enum))
    }
}

fn info(kind: TypeKind) -> TypeInfo {
    TypeInfo {
        kind,
        fields: HashMap::default(),
        possible: HashSet::default(),
    }
}

fn fields(
    fields: &[graphql_tools::parser::schema::Field<'static, String>],
) -> HashMap<String, Type<'static, String>> {
    fields
        .iter()
        .map(|f| (f.name.clone(), f.field_type.clone()))
        .collect()
}

/// The named type at the bottom of list and non-null wrappers.
pub(crate) fn named_type<'t>(ty: &'t Type<'static, String>) -> &'t str {
    match ty {
        Type::NamedType(name) => name,
        Type::ListType(inner) | Type::NonNullType(inner) => named_type(inner),
    }
}

/// Whether the type is a list (possibly non-null).
pub(crate) fn is_list(ty: &Type<'static, String>) -> bool {
    match ty {
        Type::ListType(_) => true,
        Type::NonNullType(inner) => is_list(inner),
        Type::NamedType(_) => false,
    }
}
