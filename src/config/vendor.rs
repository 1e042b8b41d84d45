//! The vendor tables as written: `[sinks.barrier_coupon]`, `[sinks.inspur_isp]`,
//! `[sinks.bingzhouxing]`, `[sinks.zvcms]`, one file each, with their keys, defaults and
//! the enums their values take. Only what serde reads lives here; each vendor's checks and
//! the settings it builds from its table live in its own folder under `src/vendors/`,
//! which re-exports these types (`vendors::isp::Config` is [`isp::Config`]).

pub mod barrier;
pub mod bingzhouxing;
pub mod isp;
pub mod zvcms;

use serde::Deserialize;

/// The vendor platforms lotbridge delivers to (bounded: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VendorKind {
    /// Barrier-gate coupon platform (`sendCoupon`).
    BarrierCoupon,
    /// Inspur City Sensing Platform.
    InspurIsp,
    /// Bingzhouxing city parking cloud.
    Bingzhouxing,
    /// zvcms member-coupon open API.
    Zvcms,
}

impl VendorKind {
    /// Label value and config table name.
    pub fn as_str(self) -> &'static str {
        match self {
            VendorKind::BarrierCoupon => "barrier_coupon",
            VendorKind::InspurIsp => "inspur_isp",
            VendorKind::Bingzhouxing => "bingzhouxing",
            VendorKind::Zvcms => "zvcms",
        }
    }
}

/// What a sink does with spaces inside plates (`plate_spaces`); applied by
/// `vendors::plate::normalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateSpaces {
    /// Remove ASCII, ideographic and every other Unicode space (the canonical form).
    #[default]
    Strip,
    /// Send the plate as received.
    Keep,
}

/// A sink's choice for a required photo field without a usable photo (`missing_photo`);
/// filled in by `vendors::missing_photo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPhoto {
    /// A documented placeholder: an 8×8 mid-grey baseline JPEG
    /// (`vendors::missing_photo::placeholder_base64`), so the passage reaches the platform
    /// and a strict platform accepts it.
    #[default]
    Placeholder,
    /// The field sent empty (`""`), as lenient platforms accept.
    Empty,
    /// The record is dead-lettered with the reason "no usable photo" (replayable once a
    /// photo is added upstream).
    Reject,
}
