mod support;
#[global_allocator]
static ALLOC: support::alloc::Counting = support::alloc::Counting;
fn main() {}
