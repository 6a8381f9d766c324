//! demarc-console: web console for demarc probes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use demarc_console::auth::UiAuth;
use demarc_console::join::JoinConfig;
use demarc_console::store::{self, retention::Retention, tokens};
use demarc_console::{app, AppState, Config};

/// Exit status for problems a restart cannot fix (EX_CONFIG), so a service
/// manager can stop restarting (systemd: RestartPreventExitStatus=78).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "demarc web console: ingest, per-packet join, SQLite store, pages"
)]
struct Cli {
    /// Address to listen on. Loopback unless told otherwise.
    #[arg(long, env = "DEMARC_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// SQLite database file; created with its schema on first start.
    #[arg(long, env = "DEMARC_DB", default_value = "demarc-console.db")]
    db: PathBuf,
    /// How long per-packet rows are kept (e.g. 24h, 90m, 7d).
    #[arg(long, env = "DEMARC_RETENTION", default_value = "24h", value_parser = parse_duration)]
    retention: Duration,
    /// How long per-minute rollups are kept.
    #[arg(long, env = "DEMARC_ROLLUP_RETENTION", default_value = "30d", value_parser = parse_duration)]
    rollup_retention: Duration,
    /// Join window: how long after a packet's first record its other records may arrive.
    #[arg(long, env = "DEMARC_JOIN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    join_window: Duration,
    /// Most packets held open by the join; beyond it the oldest are evicted and counted.
    #[arg(long, env = "DEMARC_JOIN_MAX_PENDING", default_value_t = 200_000)]
    join_max_pending: usize,
    /// Protect the UI, JSON API and /metrics with HTTP Basic auth ("user:password").
    #[arg(long, env = "DEMARC_UI_BASIC_AUTH")]
    ui_basic_auth: Option<String>,
    /// Protect the UI, JSON API and /metrics with a bearer token.
    #[arg(long, env = "DEMARC_UI_TOKEN")]
    ui_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage probe ingest tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for a probe and print it (shown once; stored hashed).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List tokens (names and state, never the tokens).
    List,
    /// Revoke a token: its probe is refused from now on.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * mult))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let pool = match store::open(&cli.db).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demarc-console: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(cli, pool).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demarc-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, pool: sqlx::SqlitePool) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Token { action }) => token(&pool, action).await,
        None => serve(cli, pool).await,
    }
}

async fn token(pool: &sqlx::SqlitePool, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create { name } => println!("{}", tokens::create(pool, &name).await?),
        TokenAction::List => {
            for t in tokens::list(pool).await? {
                let state = t.revoked_ns.map_or("active".to_owned(), |ns| {
                    format!("revoked {}", demarc_console::fmt::utc(ns))
                });
                println!(
                    "{}\tcreated {}\t{state}",
                    t.name,
                    demarc_console::fmt::utc(t.created_ns)
                );
            }
        }
        TokenAction::Revoke { name } => {
            tokens::revoke(pool, &name).await?;
            println!("revoked {name}");
        }
    }
    Ok(())
}

async fn serve(cli: Cli, pool: sqlx::SqlitePool) -> anyhow::Result<()> {
    let ui_auth = UiAuth::new(cli.ui_basic_auth.as_deref(), cli.ui_token.as_deref());
    if ui_auth.is_none() && !cli.listen.ip().is_loopback() {
        tracing::warn!(listen = %cli.listen, "UI is exposed without --ui-basic-auth or --ui-token");
    }
    let cfg = Config {
        join: JoinConfig {
            window_ms: cli.join_window.as_millis() as u64,
            max_pending: cli.join_max_pending,
        },
        retention: Retention {
            raw_ns: cli.retention.as_nanos() as i64,
            rollup_ns: cli.rollup_retention.as_nanos() as i64,
        },
        ui_auth,
        ..Config::default()
    };
    let state = AppState::new(pool, cfg);
    tokio::spawn(state.clone().run_pipeline());
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(listen = %cli.listen, db = %cli.db.display(), "demarc-console ready");
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Write what the join still holds, so a restart loses as little as possible.
    state.step(true).await.context("final join pass")?;
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (service managers): stop serving, then flush.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping: writing what the join still holds");
}
