//! The Amperity API simulator (in progress).
