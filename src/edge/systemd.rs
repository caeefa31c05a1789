//! Listening sockets passed by systemd (socket activation): `LISTEN_FDS`
//! sockets from fd 3, meant for the process `LISTEN_PID` names, each named
//! by `LISTEN_FDNAMES` (the socket units' `FileDescriptorName=`).
//!
//! systemd keeps its own copy of every socket, so a restart refuses nobody:
//! the old process closes its copy and drains, new connections wait in the
//! kernel's accept queue until the new process takes the same socket.
//!
//! The environment is read once, by [`Passed::from_env`], while the process
//! is still single-threaded (the variables are then removed, as
//! `sd_listen_fds(1)` does, so nothing spawned later inherits them).
//! `listenfd` turns a descriptor into a listener (that needs `unsafe`, which
//! this crate forbids); the names are ours to parse.

use std::net::TcpListener;

/// What a listener asked of systemd that it could not have.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("{field} = \"{listen}\": no sockets were passed by systemd (LISTEN_FDS is not set); start wif-proxy through its .socket unit (deploy/systemd/wif-proxy.socket), or listen on an address")]
    NonePassed { field: &'static str, listen: String },
    #[error("{field} = \"{listen}\": the sockets were passed to process {pid} (LISTEN_PID), not to this one ({me})")]
    OtherProcess { field: &'static str, listen: String, pid: String, me: u32 },
    #[error("{field} = \"systemd\": systemd passed {count} sockets ({names}); name the one to take, e.g. \"systemd:{first}\"")]
    Ambiguous { field: &'static str, count: usize, names: String, first: String },
    #[error("{field} = \"{listen}\": systemd passed no socket of that name (passed: {names}); set FileDescriptorName= in the .socket unit")]
    NoSuchName { field: &'static str, listen: String, names: String },
    #[error("{field} = \"{listen}\": that socket is already taken by another listener")]
    Taken { field: &'static str, listen: String },
    #[error("{field} = \"{listen}\": fd {fd} is not a listening TCP socket: {source}")]
    NotTcp { field: &'static str, listen: String, fd: usize, source: std::io::Error },
}

/// How `LISTEN_FDS` came.
#[derive(Debug)]
enum Origin {
    /// No `LISTEN_FDS`: not socket-activated.
    None,
    /// `LISTEN_PID` names another process (the variables leaked through).
    OtherProcess(String),
    /// Ours.
    Ours,
}

/// The sockets systemd passed to this process, taken one by one.
pub struct Passed {
    origin: Origin,
    fds: listenfd::ListenFd,
    /// One per socket; systemd names unnamed sockets after their unit.
    names: Vec<String>,
    taken: Vec<bool>,
}

impl std::fmt::Debug for Passed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passed").field("origin", &self.origin).field("names", &self.names).finish()
    }
}

impl Passed {
    /// No sockets: every `systemd` listener is an error.
    pub fn none() -> Passed {
        Passed { origin: Origin::None, fds: listenfd::ListenFd::empty(), names: Vec::new(), taken: Vec::new() }
    }

    /// Reads (and removes) `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`.
    /// Call it before any other thread is started.
    pub fn from_env() -> Passed {
        let var = |n: &str| std::env::var(n).ok();
        let (count, pid, names) = (var("LISTEN_FDS"), var("LISTEN_PID"), var("LISTEN_FDNAMES"));
        let me = std::process::id();
        let origin = match (&count, pid.as_deref()) {
            (None, _) => Origin::None,
            (Some(_), Some(p)) if !p.is_empty() && p.parse::<u32>().ok() != Some(me) => {
                Origin::OtherProcess(p.to_string())
            }
            (Some(_), _) => Origin::Ours,
        };
        // listenfd reads and removes LISTEN_FDS and LISTEN_PID itself.
        let fds = listenfd::ListenFd::from_env();
        std::env::remove_var("LISTEN_FDNAMES");
        let fds = if matches!(origin, Origin::Ours) { fds } else { listenfd::ListenFd::empty() };
        let mut names: Vec<String> = names.map(|n| n.split(':').map(str::to_string).collect()).unwrap_or_default();
        // Without LISTEN_FDNAMES (older systemd, other launchers) a socket is
        // nameless; systemd itself calls those "unknown".
        names.resize(fds.len(), "unknown".to_string());
        let taken = vec![false; fds.len()];
        Passed { origin, fds, names, taken }
    }

    /// How many sockets were passed.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The socket `name` names (`None`: the only one passed), for the
    /// listener configured as `field`.
    pub fn take(&mut self, field: &'static str, name: Option<&str>) -> Result<TcpListener, SystemdError> {
        let listen = match name {
            Some(n) => format!("systemd:{n}"),
            None => "systemd".to_string(),
        };
        match &self.origin {
            Origin::None => return Err(SystemdError::NonePassed { field, listen }),
            Origin::OtherProcess(pid) => {
                return Err(SystemdError::OtherProcess { field, listen, pid: pid.clone(), me: std::process::id() })
            }
            Origin::Ours if self.fds.len() == 0 => return Err(SystemdError::NonePassed { field, listen }),
            Origin::Ours => {}
        }
        let index = match name {
            None if self.fds.len() > 1 => {
                return Err(SystemdError::Ambiguous {
                    field,
                    count: self.fds.len(),
                    names: self.names.join(", "),
                    first: self.names[0].clone(),
                })
            }
            None => 0,
            Some(n) => match self.names.iter().position(|have| have == n) {
                Some(i) => i,
                None => return Err(SystemdError::NoSuchName { field, listen, names: self.names.join(", ") }),
            },
        };
        if self.taken[index] {
            return Err(SystemdError::Taken { field, listen });
        }
        let socket = self.fds.take_tcp_listener(index).map_err(|source| SystemdError::NotTcp {
            field,
            listen: listen.clone(),
            fd: 3 + index,
            source,
        })?;
        self.taken[index] = true;
        socket.ok_or(SystemdError::Taken { field, listen })
    }

    /// The names of the sockets passed but taken by no listener.
    pub fn unused(&self) -> Vec<&str> {
        self.names.iter().zip(&self.taken).filter(|(_, t)| !**t).map(|(n, _)| n.as_str()).collect()
    }
}
