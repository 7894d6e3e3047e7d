//! Which channels a notification goes to, from the user's preferences.

use crate::store::{Channel, Preferences};

/// Whether `channel` is on for a user who never chose: in-app and email.
pub fn default_enabled(channel: Channel) -> bool {
    matches!(channel, Channel::InApp | Channel::Email)
}

impl Preferences {
    /// Fresh preferences of `user_id`: the defaults.
    pub fn new(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            ..Self::default()
        }
    }

    /// Whether the channel switch of `channel` is on (`IN_APP` always is).
    pub fn channel_enabled(&self, channel: Channel) -> bool {
        channel == Channel::InApp
            || self
                .channels
                .get(&channel)
                .copied()
                .unwrap_or_else(|| default_enabled(channel))
    }

    /// The channels a notification of `kind` goes to: `IN_APP` first, then
    /// the kind's own list when the user set one, else every external
    /// channel whose switch is on.
    pub fn channels_for(&self, kind: &str) -> Vec<Channel> {
        let chosen: Vec<Channel> = match self.kinds.get(kind) {
            Some(list) => list.clone(),
            None => Channel::EXTERNAL
                .into_iter()
                .filter(|c| self.channel_enabled(*c))
                .collect(),
        };
        let mut out = vec![Channel::InApp];
        for channel in chosen {
            if !out.contains(&channel) {
                out.push(channel);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_app_and_email() {
        let prefs = Preferences::new("u1");
        assert_eq!(
            prefs.channels_for("transfer.received"),
            vec![Channel::InApp, Channel::Email]
        );
    }

    #[test]
    fn switches_and_kind_lists_apply_and_in_app_stays_on() {
        let mut prefs = Preferences::new("u1");
        prefs.channels.insert(Channel::Email, false);
        prefs.channels.insert(Channel::Sms, true);
        prefs.channels.insert(Channel::InApp, false);
        assert_eq!(prefs.channels_for("x"), vec![Channel::InApp, Channel::Sms]);
        prefs
            .kinds
            .insert("auth.otp".into(), vec![Channel::Email, Channel::Email]);
        assert_eq!(
            prefs.channels_for("auth.otp"),
            vec![Channel::InApp, Channel::Email]
        );
        prefs.kinds.insert("bonus.awarded".into(), vec![]);
        assert_eq!(prefs.channels_for("bonus.awarded"), vec![Channel::InApp]);
    }
}
