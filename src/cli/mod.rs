//! The client subcommands of the `sluice` binary: `pub`, `sub`, `topics`,
//! `info` and `history`, over the `sluice-client` crate. Data goes to
//! stdout, connection state and progress to stderr, so they pipe.

mod output;
mod publish;
mod read;
mod sub;

use std::process::ExitCode;

use sluice_client::{BoxError, Client};

/// Where the broker is, and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The broker's base URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A bearer token sent with every request.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A shell command that prints a bearer token; run again whenever the
    /// broker refuses the token or a stream's token expires.
    #[arg(long, env = "SLUICE_TOKEN_COMMAND", conflicts_with = "token")]
    pub token_command: Option<String>,
    /// PEM certificates to trust for an https:// URL besides the system's
    /// (a private CA, or the broker's self-signed certificate).
    #[arg(long, env = "SLUICE_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
}

/// A client subcommand.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Publishes DATA as one event, or each line of standard input (DATA
    /// `-` or absent) as one event, sent in batches. Prints each event's
    /// cursor on stdout.
    Pub(publish::PubArgs),
    /// Prints a topic's events as they come (data, or JSON lines with
    /// --json), reconnecting and resuming by itself across broker restarts
    /// and network loss. With --cursor-file it keeps its position in that
    /// file, so it also resumes across its own restarts. Stops on SIGINT
    /// or SIGTERM, after the event in hand is printed and saved.
    Sub(sub::SubArgs),
    /// Lists the broker's topics.
    Topics(read::TopicsArgs),
    /// Prints one topic's information.
    Info(read::InfoArgs),
    /// Prints a topic's stored events, page by page, and then the cursor
    /// to read on from (stderr).
    History(read::HistoryArgs),
}

/// Runs a client subcommand to its end.
pub fn run(cmd: ClientCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, result) = rt.block_on(async {
        match cmd {
            ClientCommand::Pub(a) => ("pub", publish::run(a).await),
            ClientCommand::Sub(a) => ("sub", sub::run(a).await),
            ClientCommand::Topics(a) => ("topics", read::topics(a).await),
            ClientCommand::Info(a) => ("info", read::info(a).await),
            ClientCommand::History(a) => ("history", read::history(a).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // With its causes: a transport error's own text says little.
            let mut text = e.to_string();
            let mut cur = e.source();
            while let Some(c) = cur {
                let t = c.to_string();
                if !text.contains(&t) {
                    text.push_str(": ");
                    text.push_str(&t);
                }
                cur = c.source();
            }
            eprintln!("sluice {name}: {text}");
            ExitCode::FAILURE
        }
    }
}

/// The client `conn` describes.
fn client(conn: &Conn) -> Result<Client, BoxError> {
    let mut b = Client::builder(conn.url.clone());
    if let Some(f) = &conn.cacert {
        let pem = std::fs::read(f).map_err(|e| format!("--cacert {}: {e}", f.display()))?;
        b = b.ca_certificate_pem(&pem)?;
    }
    let b = match (&conn.token, &conn.token_command) {
        (Some(t), _) => b.token(t.clone()),
        (None, Some(cmd)) => {
            let cmd = cmd.clone();
            b.token_provider(move || token_from_command(cmd.clone()))
        }
        (None, None) => b,
    };
    Ok(b.build()?)
}

/// Runs `cmd` with `sh -c` and takes its trimmed output as the token.
async fn token_from_command(cmd: String) -> Result<String, BoxError> {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await??;
    if !out.status.success() {
        return Err(format!("token command failed: {}", out.status).into());
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    if token.is_empty() {
        return Err("token command printed nothing".into());
    }
    Ok(token)
}
