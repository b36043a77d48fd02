//! `gpulab users …`: the accounts of lab mode from the command line, on the data directory
//! (`--data-dir`, as `serve`). It may run while the server does: both write the same
//! SQLite file (WAL), and the server reads a user's row on every request, so an account
//! added, disabled or given a new key here counts at the server's next request.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use gpulab_shared::lab::{Role, UserChange};

use super::keys;
use crate::store::users::UserChangeOutcome;
use crate::store::{JobStore, StoreOptions};

#[derive(Debug, Clone, Args)]
pub struct UsersArgs {
    /// Where the job history (SQLite) lives: the server's `--data-dir`.
    #[arg(long, env = "GPULAB_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub action: UsersAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UsersAction {
    /// Add a user (the first one turns lab mode on) and print their API key, shown this
    /// once, alone on stdout.
    Add {
        name: String,
        /// An admin: sees everything, manages users, reads the audit log.
        #[arg(long)]
        admin: bool,
    },
    /// List the users.
    List,
    /// Disable a user: refused at once, their sessions and event streams end.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Give a user a new API key (printed once on stdout); the old one stops working.
    Rotate { name: String },
}

/// Runs `gpulab users …`; every action is in the audit log with no actor (the command line).
pub fn run(args: UsersArgs) -> anyhow::Result<ExitCode> {
    let store = JobStore::open_with(&args.data_dir, StoreOptions::default())?;
    match args.action {
        UsersAction::Add { name, admin } => {
            anyhow::ensure!(
                keys::valid_name(&name),
                "`{name}` is no user name: 1 to 32 lowercase letters, digits, `-`, `_` or `.`, \
                 starting with a letter"
            );
            let key = keys::new_key(&name);
            let role = if admin { Role::Admin } else { Role::User };
            if store
                .add_user(&name, role, &keys::hash_key(&key)?, None)?
                .is_none()
            {
                anyhow::bail!("the user `{name}` exists already (`gpulab users rotate {name}` gives a new key)");
            }
            eprintln!(
                "added the {} `{name}`; their API key, shown this once:",
                if admin { "admin" } else { "user" }
            );
            println!("{key}");
        }
        UsersAction::List => {
            println!(
                "{:<32} {:<6} {:<9} {:<20} QUOTA",
                "NAME", "ROLE", "STATE", "CREATED"
            );
            for user in store.users()? {
                let quota = match &user.quota {
                    Some(q) => format!("{} s {:?}", q.seconds, q.period).to_lowercase(),
                    None => "none".into(),
                };
                println!(
                    "{:<32} {:<6} {:<9} {:<20} {quota}",
                    user.name,
                    if user.role == Role::Admin {
                        "admin"
                    } else {
                        "user"
                    },
                    if user.disabled { "disabled" } else { "enabled" },
                    user.created_at.format("%Y-%m-%d %H:%M:%S"),
                );
            }
        }
        UsersAction::Disable { name } => set_disabled(&store, &name, true)?,
        UsersAction::Enable { name } => set_disabled(&store, &name, false)?,
        UsersAction::Rotate { name } => {
            let key = keys::new_key(&name);
            anyhow::ensure!(
                store.set_key_hash(&name, &keys::hash_key(&key)?, None)?,
                "there is no user `{name}` (`gpulab users list` shows them)"
            );
            eprintln!("`{name}` has a new API key, shown this once; the old one no longer works:");
            println!("{key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set_disabled(store: &JobStore, name: &str, disabled: bool) -> anyhow::Result<()> {
    let change = UserChange {
        disabled: Some(disabled),
        ..Default::default()
    };
    match store.change_user(name, &change, None)? {
        UserChangeOutcome::Changed(_) => {
            eprintln!(
                "`{name}` is {}",
                if disabled { "disabled" } else { "enabled" }
            );
            Ok(())
        }
        UserChangeOutcome::NotFound => {
            anyhow::bail!("there is no user `{name}` (`gpulab users list` shows them)")
        }
    }
}
