//! Following the store's change feed, so every replica converges on what
//! the store holds.
//!
//! A notification only says that something changed; what changed is read
//! from the store, so a duplicated or reordered notification does no harm.
//! When notifications may have been missed (the PostgreSQL feed
//! reconnected, or this task fell behind), the copy is reloaded whole. While
//! the feed is down, the copy may be missing a revocation another replica
//! made, so decisions are denied until the reload after it reconnects has
//! succeeded ([`Directory::out_of_touch`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::task::JoinHandle;

use super::{ChangeError, Directory};
use crate::store::StoreChange;

/// The store's change feed, subscribed before the copy was first read.
#[derive(Debug)]
pub struct Following(Receiver<StoreChange>);

impl Following {
    pub(super) fn new(changes: Receiver<StoreChange>) -> Self {
        Self(changes)
    }
}

/// Applies the store's changes to `directory` until the store closes.
pub fn follow(directory: Arc<Directory>, following: Following) -> JoinHandle<()> {
    let Following(mut changes) = following;
    tokio::spawn(async move {
        loop {
            let applied = match changes.recv().await {
                Ok(StoreChange::Policies { .. }) => catch_up(&directory).await,
                Ok(StoreChange::Entities { .. }) => directory.catch_up_entities().await,
                Ok(StoreChange::FeedLost) => {
                    tracing::warn!("the store's change feed is down: decisions are denied until it is back");
                    directory.feed_lost.store(true, Ordering::Release);
                    Ok(())
                }
                Ok(StoreChange::Everything) => match resync(&directory).await {
                    Ok(()) => {
                        directory.feed_lost.store(false, Ordering::Release);
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
                Err(RecvError::Lagged(_)) => resync(&directory).await,
                Ok(StoreChange::Patient(_)) => Ok(()),
                Err(RecvError::Closed) => return,
            };
            if let Err(error) = applied {
                tracing::warn!(%error, "cannot apply a change from the store; the replica keeps what it has");
            }
        }
    })
}

/// A new policy version may bring a new schema, under which the entities
/// changed meanwhile must be read.
async fn catch_up(directory: &Directory) -> Result<(), ChangeError> {
    directory.catch_up_policies().await?;
    directory.catch_up_entities().await
}

async fn resync(directory: &Directory) -> Result<(), ChangeError> {
    tracing::info!("changes may have been missed: reloading the policies and entities from the store");
    directory.catch_up_policies().await?;
    let _change = directory.changes.lock().await;
    directory.reload_entities().await
}
