//! The `graunt` binary: parses the command line and hands over to
//! [`graunt::cli`]; every role is a library call.

use std::process::ExitCode;

use clap::Parser;

// Queries allocate and free many ~100 KiB series; glibc hands those back to
// the kernel each time (page faults, zeroing), mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    without_huge_pages();
    graunt::cli::run(graunt::cli::Cli::parse())
}

/// Turns transparent huge pages off for this process, unless the operator
/// chose for mimalloc with `MIMALLOC_ALLOW_THP`.
///
/// mimalloc asks for huge pages on its arenas (and hosts with THP set to
/// `always` give them unasked), so each 2 MiB region it touches is backed
/// and zeroed whole. Measured with `bench/ingest.py`: the cache took
/// 66–83 bytes a point with them and 43 without, points were accepted no
/// slower, and `/render` times did not change (docs/BENCHMARKS.md).
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes nothing but this process's huge-page policy.
        // A refusal (an old kernel, a seccomp filter) leaves THP as the
        // host set it, which is how graunt ran before; nothing to report.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
