//! `coracle-monitor`: see the library's docs for the protocol.

fn main() {
    eprintln!("coracle-monitor: not implemented yet");
    std::process::exit(2);
}
