//! The wire protocol: line framing, command parsing, reply encoding, address codecs.

pub mod addr;
pub mod command;
pub mod line;
pub mod reply;

pub use command::{Command, ParseError, Verb};
pub use line::{Frame, LineFramer};
pub use reply::Reply;
