//! Client input, checked before it reaches the rules: every failure is
//! `MSCoreValidation` naming the field.

use serde_json::Value;
use service_core::{ApiError, ApiResult};

use crate::store::{Channel, Preferences};

/// Longest title.
const MAX_TITLE: usize = 200;
/// Longest body.
const MAX_BODY: usize = 5000;
/// Largest `data`, serialised.
const MAX_DATA_BYTES: usize = 16 * 1024;
/// Most per-kind entries a user may keep.
const MAX_KINDS: usize = 50;

/// A kind is a dotted lower-case name (`transfer.received`), 1..=64 long.
pub(super) fn check_kind(field: &str, kind: &str) -> ApiResult<()> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        && !kind.starts_with('.')
        && !kind.ends_with('.')
        && !kind.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            "must be a dotted lower-case name of at most 64 characters",
        ))
    }
}

fn check_text(field: &str, text: &str, max: usize) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// `sendNotification`'s input.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// The recipient.
    pub user_id: String,
    /// What it is about.
    pub kind: String,
    /// Headline.
    pub title: String,
    /// Text.
    pub body: String,
    /// Structured details.
    pub data: Option<Value>,
    /// Exactly these channels (plus `IN_APP`); `None` follows preferences.
    pub channels: Option<Vec<Channel>>,
}

impl SendRequest {
    /// Checks every field.
    pub fn validate(&self) -> ApiResult<()> {
        if self.user_id.trim().is_empty() || self.user_id.len() > 128 {
            return Err(ApiError::validation(
                "input.userId",
                "must be a user id of at most 128 characters",
            ));
        }
        check_kind("input.kind", &self.kind)?;
        check_text("input.title", &self.title, MAX_TITLE)?;
        check_text("input.body", &self.body, MAX_BODY)?;
        if let Some(data) = &self.data {
            let size = serde_json::to_vec(data)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_DATA_BYTES {
                return Err(ApiError::validation(
                    "input.data",
                    format!("must be at most {MAX_DATA_BYTES} bytes of JSON"),
                ));
            }
        }
        Ok(())
    }
}

/// `updateNotificationPreferences`'s input: only what is given changes.
#[derive(Clone, Debug, Default)]
pub struct PreferencesChange {
    /// Channel switches to set.
    pub channels: Vec<(Channel, bool)>,
    /// Per-kind channel lists to set; an empty list means in-app only.
    pub kinds: Vec<(String, Vec<Channel>)>,
    /// Per-kind lists to remove (back to the switches).
    pub reset_kinds: Vec<String>,
    /// A new email address (`Some(None)` forgets it).
    pub email: Option<Option<String>>,
}

impl PreferencesChange {
    /// Checks every field: `IN_APP` cannot be switched off, kinds are
    /// well-formed, the address parses.
    pub fn validate(&self) -> ApiResult<()> {
        if self
            .channels
            .iter()
            .any(|(c, on)| *c == Channel::InApp && !on)
        {
            return Err(ApiError::validation(
                "input.channels",
                "IN_APP is always on and cannot be disabled",
            ));
        }
        if self.kinds.len() > MAX_KINDS {
            return Err(ApiError::validation(
                "input.kinds",
                format!("at most {MAX_KINDS} kinds"),
            ));
        }
        for (kind, _) in &self.kinds {
            check_kind("input.kinds.kind", kind)?;
        }
        for kind in &self.reset_kinds {
            check_kind("input.resetKinds", kind)?;
        }
        if let Some(Some(email)) = &self.email {
            if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
                return Err(ApiError::validation(
                    "input.email",
                    "must be a valid email address",
                ));
            }
        }
        Ok(())
    }

    /// Applies the change (already validated).
    pub fn apply(&self, prefs: &mut Preferences) {
        for (channel, on) in &self.channels {
            prefs.channels.insert(*channel, *on);
        }
        prefs.channels.remove(&Channel::InApp);
        for (kind, channels) in &self.kinds {
            let mut list: Vec<Channel> = Vec::new();
            for c in channels {
                if *c != Channel::InApp && !list.contains(c) {
                    list.push(*c);
                }
            }
            prefs.kinds.insert(kind.clone(), list);
        }
        for kind in &self.reset_kinds {
            prefs.kinds.remove(kind);
        }
        if let Some(email) = &self.email {
            prefs.email = email.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: ApiError) -> String {
        err.extensions()["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn kinds_are_checked() {
        for good in ["auth.otp", "transfer.received", "a1_b"] {
            assert!(check_kind("k", good).is_ok(), "{good}");
        }
        for bad in ["", "Auth", "a..b", ".a", "a.", "a b", &"x".repeat(65)] {
            assert!(check_kind("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn send_requests_are_checked_field_by_field() {
        let ok = SendRequest {
            user_id: "u1".into(),
            kind: "promo.news".into(),
            title: "Hi".into(),
            body: "Hello".into(),
            data: None,
            channels: None,
        };
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.title = " ".into();
        assert_eq!(field(bad.validate().unwrap_err()), "input.title");
        let mut bad = ok.clone();
        bad.body = "x".repeat(MAX_BODY + 1);
        assert_eq!(field(bad.validate().unwrap_err()), "input.body");
        let mut bad = ok;
        bad.kind = "NOPE".into();
        assert_eq!(field(bad.validate().unwrap_err()), "input.kind");
    }

    #[test]
    fn in_app_cannot_be_switched_off_and_emails_must_parse() {
        let change = PreferencesChange {
            channels: vec![(Channel::InApp, false)],
            ..Default::default()
        };
        assert_eq!(field(change.validate().unwrap_err()), "input.channels");
        let change = PreferencesChange {
            email: Some(Some("not an address".into())),
            ..Default::default()
        };
        assert_eq!(field(change.validate().unwrap_err()), "input.email");
    }
}
