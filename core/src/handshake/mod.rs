pub mod client;
pub mod key;
pub mod server;
