mod registry;
fn main() {}
