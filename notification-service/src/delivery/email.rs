//! The EMAIL channel: SMTP through `lettre`, or, with no SMTP host
//! configured (the embedded default), a transport that logs that a message
//! was sent and optionally writes it to a directory as an `.eml` file.
//! Neither ever logs a message body (which may hold a one-time code).

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::provider::{OutboundMessage, Provider, ProviderError};
use crate::config::{NotificationConfig, SmtpTls};

/// Why the email transport could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmailSetupError {
    /// `NOTIFICATION_SMTP_FROM` is not a mailbox.
    #[error("NOTIFICATION_SMTP_FROM is not a valid mailbox")]
    From,
    /// The relay could not be configured (bad host for TLS).
    #[error("SMTP relay: {0}")]
    Relay(String),
}

/// Builds the EMAIL provider from the settings: SMTP when a host is set,
/// the log (or file) transport otherwise. `timeout` bounds each SMTP
/// command, under the channel policy's overall deadline.
pub fn email_provider(
    config: &NotificationConfig,
    timeout: Duration,
) -> Result<Box<dyn Provider>, EmailSetupError> {
    let from: Mailbox = config
        .smtp_from
        .parse()
        .map_err(|_| EmailSetupError::From)?;
    let Some(host) = config.smtp_host.as_deref().filter(|h| !h.trim().is_empty()) else {
        tracing::info!(
            outbox = ?config.email_outbox_dir,
            "NOTIFICATION_SMTP_HOST is not set: email goes to the log transport"
        );
        return Ok(Box::new(LogMailer {
            from,
            outbox: config.email_outbox_dir.clone(),
        }));
    };
    let builder = match config.smtp_tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|err| EmailSetupError::Relay(err.to_string()))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|err| EmailSetupError::Relay(err.to_string()))?,
    };
    let mut builder = builder.port(config.smtp_port).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&config.smtp_username, &config.smtp_password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(Box::new(SmtpMailer {
        transport: builder.build(),
        from,
    }))
}

/// Builds the RFC 5322 message; a bad recipient is a permanent failure.
fn message(from: &Mailbox, msg: &OutboundMessage) -> Result<Message, ProviderError> {
    let to: Mailbox = msg
        .email
        .as_deref()
        .ok_or_else(|| ProviderError::permanent("no email address known for the user"))?
        .parse()
        .map_err(|_| ProviderError::permanent("the user's email address is not valid"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(msg.title.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(msg.body.clone())
        .map_err(|err| ProviderError::permanent(format!("cannot build the email: {err}")))
}

/// Email over SMTP.
struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Provider for SmtpMailer {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(&'a self, msg: &'a OutboundMessage) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let email = message(&self.from, msg)?;
            match self.transport.send(email).await {
                Ok(_) => Ok(()),
                // A 5xx reply is final; 4xx replies, timeouts and dropped
                // connections may pass later.
                Err(err) if err.is_permanent() => {
                    Err(ProviderError::permanent(format!("SMTP refused: {err}")))
                }
                Err(err) => Err(ProviderError::transient(format!("SMTP failed: {err}"))),
            }
        })
    }
}

/// The embedded default: no relay, so the message is logged as sent
/// (recipient domain and kind only) and, with an outbox directory, written
/// there in full for a developer to open.
struct LogMailer {
    from: Mailbox,
    outbox: Option<PathBuf>,
}

impl Provider for LogMailer {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, msg: &'a OutboundMessage) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let email = message(&self.from, msg)?;
            if let Some(dir) = &self.outbox {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|err| ProviderError::transient(format!("outbox: {err}")))?;
                let path = dir.join(format!("{}.eml", msg.notification_id));
                tokio::fs::write(&path, email.formatted())
                    .await
                    .map_err(|err| ProviderError::transient(format!("outbox: {err}")))?;
            }
            let domain = msg
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d)
                .unwrap_or("");
            tracing::info!(
                notification_id = %msg.notification_id,
                kind = %msg.kind,
                recipient_domain = domain,
                "email accepted by the log transport (no SMTP host configured)"
            );
            Ok(())
        })
    }
}
