//! Which TCP ports a process listens on, read from /proc.
//!
//! The suite's children (the simulator, operators) bind port 0 and are asked
//! afterwards which port the kernel gave them. Finding a free port by binding and
//! dropping a listener, then handing its number to a child, is a race: anything
//! on the machine can take the port in between, and an operator whose metrics
//! port is taken goes on without one (or, worse, another process answers on it).
//!
//! Shared by the end-to-end suite and the load harness (benches/load).

use std::collections::HashSet;

/// The ports on which any of `pids` has a listening TCP socket (IPv4 or IPv6).
pub fn listening_ports(pids: &[u32]) -> Vec<u16> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            // "socket:[12345]"
            if let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    let Some(pid) = pids.first() else {
        return ports;
    };
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            // 0A: LISTEN
            if *state != "0A" || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
    }
    ports
}
