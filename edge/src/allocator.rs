//! What the memory allocator holds, for `/metrics`: jemalloc's own counts of bytes the program has allocated,
//! the pages backing them (active), what is resident, and what it keeps mapped but returned (retained). RSS
//! alone cannot tell a leak (allocated grows) from fragmentation or unreturned free pages (resident grows
//! while allocated does not); these can. Only the `edge` binary uses jemalloc as its allocator (it says so
//! with [`set_in_use`]); elsewhere (tests linking the library) nothing is reported.

use std::sync::atomic::{AtomicBool, Ordering};

static IN_USE: AtomicBool = AtomicBool::new(false);

/// Called by the binary that installs jemalloc as the global allocator.
pub fn set_in_use() {
    IN_USE.store(true, Ordering::Relaxed);
}

/// jemalloc's totals, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub retained: u64,
}

/// The totals now, when jemalloc is the allocator.
pub fn stats() -> Option<Stats> {
    if !IN_USE.load(Ordering::Relaxed) {
        return None;
    }
    // jemalloc's statistics are a snapshot refreshed by writing to `epoch`.
    let mut epoch: u64 = 1;
    // SAFETY: `epoch` takes and gives a u64; the pointers and lengths describe it.
    let refreshed = unsafe {
        let mut len = std::mem::size_of::<u64>();
        let ptr = (&raw mut epoch).cast();
        tikv_jemalloc_sys::mallctl(c"epoch".as_ptr(), ptr, &mut len, ptr, len)
    };
    if refreshed != 0 {
        return None;
    }
    let read = |name: &std::ffi::CStr| -> Option<u64> {
        let mut value: libc::size_t = 0;
        let mut len = std::mem::size_of::<libc::size_t>();
        // SAFETY: these statistics are size_t values; the pointer and length describe one.
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut value).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (status == 0).then_some(value as u64)
    };
    Some(Stats {
        allocated: read(c"stats.allocated")?,
        active: read(c"stats.active")?,
        resident: read(c"stats.resident")?,
        retained: read(c"stats.retained")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nothing_is_reported_where_jemalloc_is_not_the_allocator() {
        assert_eq!(super::stats(), None);
    }
}
