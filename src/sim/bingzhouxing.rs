//! The Bingzhouxing simulator (being written).
