//! `bookgen OUT_DIR [LESSONS]`: write the benchmark book (or its first LESSONS lessons and its
//! images) as files under OUT_DIR, for tools outside Rust (e.g. the predecessor comparison in
//! docs/BENCHMARKS.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: bookgen OUT_DIR [LESSONS]");
        return ExitCode::from(2);
    };
    let mut spec = bookgen::BookSpec::bench_200mib();
    if let Some(n) = args.next() {
        match n.parse() {
            Ok(n) => spec.lessons = n,
            Err(e) => {
                eprintln!("LESSONS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (mut files, mut bytes) = (0usize, 0usize);
    for f in spec.files() {
        let path = std::path::Path::new(&out).join(&f.path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &f.bytes));
        if let Err(e) = written {
            eprintln!("writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        files += 1;
        bytes += f.bytes.len();
    }
    println!("{files} files, {bytes} bytes under {out}");
    ExitCode::SUCCESS
}
