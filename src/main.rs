fn main() {
    std::process::exit(remix::cli::main());
}
