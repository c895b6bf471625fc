//! Tests of the Amperity side (src/amperity/, src/sim/): the client against the simulator over real HTTP, through a TLS proxy, and the simulator against Amperity's OpenAPI file.

mod client;
mod hostile;
mod simulator;
mod tls_proxy;
