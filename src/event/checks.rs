//! The checks JSON Schema cannot express, field by field: lengths, control characters,
//! timestamps, space counts, base64 and JPEG photos, exits, coupon grants and queries.

use super::decode::*;
use super::*;

/// Serde reads a struct from a JSON array too; the contract wants objects only.
pub(super) fn check_object(field: &str, json: &[u8]) -> Result<(), DecodeError> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(_) => Err(DecodeError::new(field, "must be a JSON object")),
        None => Err(DecodeError::new(field, "is empty")),
    }
}

pub(super) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}.{b}"),
    }
}

pub(super) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(super) fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    // Byte length bounds char count from above; count chars only when it matters.
    let chars = if value.len() <= max { value.chars().count() } else { value.chars().take(max + 1).count() };
    if chars < min {
        return Err(DecodeError::new(field, "must not be empty"));
    }
    if chars > max {
        return Err(DecodeError::new(field, format!("is longer than {max} characters")));
    }
    Ok(())
}

/// Ids and lot codes end up in URLs, headers and logs: no line breaks, NULs or escapes.
pub(super) fn check_no_control(field: &str, value: &str) -> Result<(), DecodeError> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(DecodeError::new(field, format!("must not contain control characters, found {c:?}"))),
        None => Ok(()),
    }
}

pub(super) fn check_opt(field: &str, value: &Option<String>, max: usize) -> Result<(), DecodeError> {
    match value {
        Some(v) => check_len(field, v, 0, max),
        None => Ok(()),
    }
}

/// Parses an RFC 3339 timestamp with an explicit offset and a year in 2000..=2099.
pub fn timestamp(field: &str, text: &str) -> Result<DateTime<FixedOffset>, DecodeError> {
    if !rfc3339_shape(text.as_bytes()) {
        return Err(DecodeError::new(
            field,
            format!("{:?} is not an RFC 3339 timestamp like 2026-11-23T08:00:00+08:00", truncate(text)),
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map_err(|e| DecodeError::new(field, format!("{:?} is not a valid date and time: {e}", truncate(text))))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with year 20xx: the same shape as the schemas' pattern.
pub(super) fn rfc3339_shape(b: &[u8]) -> bool {
    fn digits(b: &[u8]) -> bool {
        b.iter().all(u8::is_ascii_digit)
    }
    if b.len() < 20 || &b[..2] != b"20" || !digits(&b[..4]) || b[4] != b'-' || !digits(&b[5..7]) || b[7] != b'-' {
        return false;
    }
    if !digits(&b[8..10]) || b[10] != b'T' || !digits(&b[11..13]) || b[13] != b':' || !digits(&b[14..16]) {
        return false;
    }
    // Seconds 00-59: chrono would accept a leap second at any minute.
    if b[16] != b':' || !digits(&b[17..19]) || b[17] > b'5' {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        b"Z" => true,
        [s, h1, h2, b':', m1, m2] => (*s == b'+' || *s == b'-') && digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
    }
}

pub(super) fn lot_info(info: LotInfo) -> Result<LotInfo, DecodeError> {
    check_opt("data.name", &info.name, MAX_TEXT_CHARS)?;
    check_opt("data.address", &info.address, MAX_TEXT_CHARS)?;
    if let Some(lon) = info.longitude {
        if !(-180.0..=180.0).contains(&lon) {
            return Err(DecodeError::new("data.longitude", format!("{lon} is outside -180..=180 degrees")));
        }
    }
    if let Some(lat) = info.latitude {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(DecodeError::new("data.latitude", format!("{lat} is outside -90..=90 degrees")));
        }
    }
    if let Some(total) = info.total_spaces {
        check_spaces("data.total_spaces", total)?;
    }
    Ok(info)
}

pub(super) fn check_spaces(field: &str, n: u32) -> Result<(), DecodeError> {
    if n > MAX_SPACES {
        return Err(DecodeError::new(field, format!("{n} is more than the {MAX_SPACES} spaces a lot may have")));
    }
    Ok(())
}

pub(super) fn spaces(s: Spaces) -> Result<Spaces, DecodeError> {
    check_spaces("data.total", s.total)?;
    if s.free > s.total {
        return Err(DecodeError::new("data.free", format!("{} free spaces exceed data.total ({})", s.free, s.total)));
    }
    Ok(s)
}

pub(super) fn vehicle(v: Vehicle) -> Result<Vehicle, DecodeError> {
    if let Some(plate) = &v.plate {
        check_len("data.plate", plate, 1, MAX_PLATE_CHARS)?;
    }
    check_opt("data.plate_color", &v.plate_color, MAX_TEXT_CHARS)?;
    check_opt("data.brand", &v.brand, MAX_TEXT_CHARS)?;
    check_len("data.gate", &v.gate, 1, MAX_TEXT_CHARS)?;
    if let Some(photo) = &v.photo {
        check_opt("data.photo.name", &photo.name, MAX_TEXT_CHARS)?;
        check_base64("data.photo.jpeg_base64", &photo.jpeg_base64)?;
        check_jpeg("data.photo.jpeg_base64", &photo.jpeg_base64)?;
    }
    Ok(v)
}

/// Standard base64 with padding: the alphabet, and a length that is a multiple of 4.
pub(super) fn check_base64(field: &str, text: &str) -> Result<(), DecodeError> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err(DecodeError::new(field, "must not be empty"));
    }
    if b.len() > MAX_PHOTO_BASE64_BYTES {
        return Err(DecodeError::new(field, format!("is longer than {MAX_PHOTO_BASE64_BYTES} bytes")));
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    let body = &b[..b.len() - pad];
    let alphabet_ok = crate::photo::all_base64_symbols(body);
    if b.len() % 4 != 0 || pad > 2 || !alphabet_ok {
        return Err(DecodeError::new(
            field,
            "is not standard base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4)",
        ));
    }
    Ok(())
}

/// A JPEG opens with the SOI marker and a segment marker (FF D8 FF), which standard base64
/// writes as `/9j/`: anything else (a PNG, a GIF, text) is not the photo the vendors take.
pub(super) fn check_jpeg(field: &str, base64: &str) -> Result<(), DecodeError> {
    if base64.starts_with("/9j/") {
        return Ok(());
    }
    let what = match base64.get(..4) {
        Some("iVBO") => "a PNG image",
        Some("R0lG") => "a GIF image",
        Some("UklG") => "a RIFF (WebP) image",
        _ => "not an image lotbridge knows",
    };
    Err(DecodeError::new(field, format!("is {what}, not a JPEG (JPEG bytes in base64 start with /9j/)")))
}

pub(super) fn exit(r: RawExit) -> Result<Exit, DecodeError> {
    let vehicle = vehicle(Vehicle {
        plate: r.plate,
        plate_color: r.plate_color,
        vehicle_type: r.vehicle_type,
        brand: r.brand,
        gate: r.gate,
        photo: r.photo,
    })?;
    let paid_at = r.paid_at.as_deref().map(|t| timestamp("data.paid_at", t)).transpose()?;
    Ok(Exit {
        vehicle,
        parked_minutes: r.parked_minutes,
        fee_payable_cents: r.fee_payable_cents,
        fee_paid_cents: r.fee_paid_cents,
        paid_at,
        payment_method: r.payment_method,
    })
}

pub(super) fn grant(r: RawGrant) -> Result<CouponGrant, DecodeError> {
    let to = match (r.to.plate, r.to.phone) {
        (Some(p), None) => {
            check_len("data.to.plate", &p, 1, MAX_PLATE_CHARS)?;
            CouponTarget::Plate(p)
        }
        (None, Some(p)) => {
            check_len("data.to.phone", &p, 1, 32)?;
            CouponTarget::Phone(p)
        }
        _ => return Err(DecodeError::new("data.to", "must name exactly one of plate or phone")),
    };
    if r.lots.is_empty() || r.lots.len() > MAX_COUPON_LOTS {
        return Err(DecodeError::new("data.lots", format!("must list 1 to {MAX_COUPON_LOTS} lot codes")));
    }
    for (i, lot) in r.lots.iter().enumerate() {
        check_len(&format!("data.lots[{i}]"), lot, 1, MAX_LOT_CHARS)?;
        check_no_control(&format!("data.lots[{i}]"), lot)?;
    }
    if r.minutes == 0 {
        return Err(DecodeError::new("data.minutes", "must be greater than 0"));
    }
    let valid_from = timestamp("data.valid_from", &r.valid_from)?;
    let valid_until = timestamp("data.valid_until", &r.valid_until)?;
    if valid_until <= valid_from {
        return Err(DecodeError::new("data.valid_until", "must be later than data.valid_from"));
    }
    check_len("data.source", &r.source, 1, MAX_LOT_CHARS)?;
    Ok(CouponGrant { to, lots: r.lots, minutes: r.minutes, valid_from, valid_until, source: r.source })
}

pub(super) fn query(q: MemberCouponQuery) -> Result<MemberCouponQuery, DecodeError> {
    check_len("data.member_id", &q.member_id, 1, MAX_ID_CHARS)?;
    check_opt("data.store_sn", &q.store_sn, MAX_ID_CHARS)?;
    Ok(q)
}
