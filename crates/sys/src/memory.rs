//! Giving memory back after a burst: a flood of connections leaves the
//! allocator holding what it served them with, freed but not returned (RSS went
//! from 5 MB to 38 MB, and stayed). `trim` asks glibc's allocator to return it.
//!
//! # Caveats
//!
//! - glibc only (`malloc_trim`); elsewhere it does nothing.
//! - It walks the heap: call it once a burst is over, not per request.

/// Returns free heap memory to the system; whether any was.
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only touches the allocator's own state, under its
        // locks; any thread may call it at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}
