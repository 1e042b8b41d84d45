//! The barrier-gate coupon platform simulator (being written).
