fn main() {
    eprintln!("whaled: not built yet");
    std::process::exit(1);
}
