fn main() -> std::process::ExitCode {
    match gpulab::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpulab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
