//! Bookie disk usage on a real bookie.
