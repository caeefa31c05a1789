//! The binary: the allocator, then the command line (`cli`).

/// jemalloc rather than glibc's malloc: idle connections are small
/// allocations spread over the heap; glibc keeps the pages a burst of busy
/// connections used resident for good, jemalloc returns them.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Return freed pages to the OS within about a second, from jemalloc's own
/// background thread (an idle proxy makes no allocator calls that would).
// Naming a symbol is `unsafe_code` to the compiler: this one is the
// documented way to configure jemalloc, read once at start-up.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
