//! Acknowledged pickle: an opt-in extension of carbon's pickle protocol
//! between graunt processes, so a sender knows which frames a receiver has
//! taken in (a node: in its write-ahead log; a relay: in its queues) and a
//! restart of either end loses and repeats nothing.
//!
//! carbon's protocol has no replies, so a sender cannot tell what a receiver
//! that died or restarted had read. Here the sender opens each connection
//! with [`HELLO_FRAME`], a valid pickle frame of an empty list (carbon-cache
//! and carbon-relay take it as no metrics, so the same sender still talks to
//! them, unacknowledged). A graunt receiver recognises it and answers with
//! newline-terminated control lines:
//!
//! ```text
//! graunt-ack 1        the receiver acknowledges from now on
//! ack <bytes>         it has taken in this many bytes of the connection
//! drain               it is stopping: send nothing more, close your side
//! ```
//!
//! After `drain` the sender half-closes; the receiver reads to the end, takes
//! in everything, sends a last `ack` and closes. Frames past the last `ack`
//! are sent again on the next connection.

/// The pickle payload of the hello: `(`, the string `graunt-ack`, `1`
/// (pop to mark), `]`, `.`; it unpickles to `[]` anywhere.
pub const HELLO_PAYLOAD: &[u8] = b"(X\x0a\x00\x00\x00graunt-ack1].";

/// The hello as a frame, length prefix included.
pub const HELLO_FRAME: &[u8] = b"\x00\x00\x00\x13(X\x0a\x00\x00\x00graunt-ack1].";

/// The receiver's answer to the hello.
pub const REPLY: &[u8] = b"graunt-ack 1\n";

/// The receiver asks the sender to stop and close its side.
pub const DRAIN: &[u8] = b"drain\n";

/// The acknowledgement line for `bytes` taken in.
pub fn ack_line(bytes: u64) -> Vec<u8> {
    format!("ack {bytes}\n").into_bytes()
}

/// One control line from a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The receiver speaks this protocol.
    Hello,
    /// Bytes of the connection taken in so far.
    Ack(u64),
    /// The receiver is stopping.
    Drain,
}

/// Parses the complete lines at the front of `buf`, returning them and the
/// bytes used. Unknown lines are skipped, so a later version can add some.
pub fn parse_control(buf: &[u8]) -> (Vec<Control>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(end) = buf[used..].iter().position(|&b| b == b'\n') {
        let line = &buf[used..used + end];
        used += end + 1;
        if line == &REPLY[..REPLY.len() - 1] {
            out.push(Control::Hello);
        } else if line == &DRAIN[..DRAIN.len() - 1] {
            out.push(Control::Drain);
        } else if let Some(n) = line
            .strip_prefix(b"ack ")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse().ok())
        {
            out.push(Control::Ack(n));
        }
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_a_frame_of_its_payload() {
        let (payload, used) = super::super::pickle::next_frame(HELLO_FRAME, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(payload, HELLO_PAYLOAD);
        assert_eq!(used, HELLO_FRAME.len());
    }

    #[test]
    fn control_lines_parse_and_partial_ones_wait() {
        let mut bytes = REPLY.to_vec();
        bytes.extend(ack_line(42));
        bytes.extend(b"future thing\n");
        bytes.extend(DRAIN);
        bytes.extend(b"ack 4");
        let (lines, used) = parse_control(&bytes);
        assert_eq!(
            lines,
            vec![Control::Hello, Control::Ack(42), Control::Drain]
        );
        assert_eq!(&bytes[used..], b"ack 4");
    }
}
