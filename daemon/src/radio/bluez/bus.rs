//! A watcher connection to the system bus: notices the bus going away and `bluetoothd`
//! (`org.bluez`) leaving or being replaced, neither of which bluer or btleplug report.

use std::sync::Arc;
use std::time::Duration;

use dbus::message::MatchRule;
use dbus::nonblock::{MsgMatch, Proxy, SyncConnection};
use futures::{Stream, StreamExt};
use tokio::task::JoinHandle;

use super::{system_bus_address, BluezError};

const BLUEZ_NAME: &str = "org.bluez";

type OwnerChanges = std::pin::Pin<Box<dyn Stream<Item = (String, String, String)> + Send>>;

pub(super) struct BusWatch {
    conn: Arc<SyncConnection>,
    /// Drives the connection; finishes when the bus connection is lost.
    io_task: JoinHandle<()>,
    _owner_match: MsgMatch,
    owner_changes: OwnerChanges,
    limit: Duration,
}

impl Drop for BusWatch {
    fn drop(&mut self) {
        // Closes the connection (the task owns its I/O).
        self.io_task.abort();
    }
}

impl BusWatch {
    /// Connects and subscribes to `NameOwnerChanged`.
    pub(super) async fn open(limit: Duration) -> Result<BusWatch, BluezError> {
        let unavailable = |reason: String| BluezError::BusUnavailable {
            address: system_bus_address(),
            reason,
        };
        let connect = tokio::task::spawn_blocking(dbus_tokio::connection::new_system_sync);
        let (resource, conn) = match tokio::time::timeout(limit, connect).await {
            Err(_) => return Err(BluezError::Timeout(limit, "connecting to the system bus")),
            Ok(Err(join)) => return Err(unavailable(join.to_string())),
            Ok(Ok(Err(e))) => return Err(unavailable(dbus_error_text(&e))),
            Ok(Ok(Ok(pair))) => pair,
        };
        let io_task = tokio::spawn(async move {
            let _lost = resource.await;
        });
        let rule = MatchRule::new_signal("org.freedesktop.DBus", "NameOwnerChanged")
            .with_sender("org.freedesktop.DBus")
            .with_path("/org/freedesktop/DBus");
        let added = tokio::time::timeout(limit, conn.add_match(rule)).await;
        let owner_match = match added {
            Err(_) => {
                io_task.abort();
                return Err(BluezError::Timeout(
                    limit,
                    "subscribing to NameOwnerChanged",
                ));
            }
            Ok(Err(cause)) => {
                io_task.abort();
                return Err(BluezError::DBus {
                    context: "subscribing to NameOwnerChanged",
                    cause,
                });
            }
            Ok(Ok(m)) => m,
        };
        let (owner_match, stream) = owner_match.stream::<(String, String, String)>();
        let owner_changes: OwnerChanges = Box::pin(stream.map(|(_, args)| args));
        Ok(BusWatch {
            conn,
            io_task,
            _owner_match: owner_match,
            owner_changes,
            limit,
        })
    }

    /// `Ok` if somebody owns `org.bluez`.
    /// (Borrows nothing across the await: `BusWatch` is `Send` but not `Sync`.)
    pub(super) fn require_bluetoothd(
        &self,
    ) -> impl std::future::Future<Output = Result<(), BluezError>> + Send + 'static {
        let proxy = Proxy::new(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            self.limit,
            self.conn.clone(),
        );
        async move { Self::has_bluetoothd(proxy).await }
    }

    async fn has_bluetoothd(proxy: Proxy<'static, Arc<SyncConnection>>) -> Result<(), BluezError> {
        let (has_owner,): (bool,) = proxy
            .method_call("org.freedesktop.DBus", "NameHasOwner", (BLUEZ_NAME,))
            .await
            .map_err(|cause| BluezError::DBus {
                context: "asking the bus whether bluetoothd is there",
                cause,
            })?;
        if has_owner {
            Ok(())
        } else {
            Err(BluezError::NoBluetoothd {
                address: system_bus_address(),
            })
        }
    }

    /// Resolves when the bus connection is lost or `org.bluez` changes owner.
    pub(super) async fn lost(&mut self) -> BluezError {
        loop {
            tokio::select! {
                _ = &mut self.io_task => return BluezError::BusLost,
                change = self.owner_changes.next() => match change {
                    None => return BluezError::BusLost,
                    Some((name, _old, _new)) if name == BLUEZ_NAME => {
                        return BluezError::BluetoothdGone
                    }
                    Some(_) => {}
                },
            }
        }
    }
}

fn dbus_error_text(e: &dbus::Error) -> String {
    match (e.name(), e.message()) {
        (Some(n), Some(m)) => format!("{m} ({n})"),
        (None, Some(m)) => m.to_string(),
        (Some(n), None) => n.to_string(),
        (None, None) => "unknown D-Bus error".to_string(),
    }
}
