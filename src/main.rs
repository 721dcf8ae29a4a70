fn main() {
    std::process::exit(conntest::cli::main());
}
