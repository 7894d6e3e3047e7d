//! Opens a fresh, private database on either engine.

use std::sync::Arc;

use secrecy::SecretString;
use service_core::db::{Database, DbConfig, EmbeddedEngine, NamingStrategy, PoolSettings};
use tempfile::TempDir;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Engine {
    Journal,
    Sqlite,
    Mongo,
}

/// A database of its own; an embedded one lives in a temporary directory
/// removed when the test ends.
pub(crate) struct TestDb {
    pub(crate) db: Arc<Database>,
    pub(crate) engine: Engine,
    _dir: TempDir,
}

impl std::ops::Deref for TestDb {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

pub(crate) async fn open(engine: Engine) -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mongodb_uri = match engine {
        Engine::Journal | Engine::Sqlite => None,
        Engine::Mongo => Some(SecretString::from(std::env::var("TEST_MONGODB_URI").expect(
            "TEST_MONGODB_URI is not set: run scripts/test.sh, which starts a MongoDB wire server",
        ))),
    };
    // A unique brand gives every test its own database.
    let brand = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = DbConfig {
        mongodb_uri,
        data_dir: dir.path().to_path_buf(),
        brand,
        tenant: "default".to_owned(),
        service: "conformance".to_owned(),
        naming: NamingStrategy::PerBrandService,
        embedded: match engine {
            Engine::Sqlite => EmbeddedEngine::Sqlite,
            Engine::Journal | Engine::Mongo => EmbeddedEngine::Journal,
        },
        pool: PoolSettings::default(),
    };
    let db = Database::open(&config)
        .await
        .unwrap_or_else(|err| panic!("cannot open the {engine:?} store: {err}"));
    TestDb {
        db: Arc::new(db),
        engine,
        _dir: dir,
    }
}
