fn main() -> std::process::ExitCode {
    wif_proxy::cli::main()
}
