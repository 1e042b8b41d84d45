//! The Inspur ISP simulator (being written).
