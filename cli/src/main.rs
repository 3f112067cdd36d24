fn main() {
    eprintln!("whale: not built yet");
    std::process::exit(1);
}
