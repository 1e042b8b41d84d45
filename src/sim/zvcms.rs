//! The zvcms simulator (being written).
