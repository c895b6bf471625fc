//! Keeps the operator's resident memory close to what it actually holds.
//!
//! glibc's allocator (the container image's) gives each thread that allocates an
//! arena of its own and returns freed memory to the system only from the top of
//! each arena. An operator whose reconciles allocate and free a run's JSON on
//! whichever thread polls it ends up with several arenas, each with free holes
//! that stay resident: at 10,000 runs the process held about twice its live heap.
//! Fewer arenas and a periodic trim give the holes back.

use std::time::Duration;

/// How often free memory is handed back to the system. A trim walks the free
/// lists once (about a millisecond for a heap of tens of MiB).
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Caps the allocator's arenas; call before any other thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands free memory back to the system every [`TRIM_EVERY`], for as long as it runs.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim();
    }
}

/// Returns free pages of every arena to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
