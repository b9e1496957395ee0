//! End-to-end tests of a round: every member and the server, messages through the codec.
