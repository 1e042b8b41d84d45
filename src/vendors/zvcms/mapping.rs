//! `member.coupons.requested` → the `Params` of `coupon.user-coupon-list` (pure).
//!
//! The lookup is always a plain listing (`shopping` 0: no basket to check against), so
//! `checked` and `from_pay_page` are never set. Absent filters are sent as `""` like the
//! spec's example, or left out (`send_absent_params = false`).

use super::config::{AmountUnit, IntParams};
use crate::event::{CouponStatus, MemberCouponQuery};
use crate::vendors::MapError;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// How the queries of one sink are written.
#[derive(Debug, Clone, Copy)]
pub struct ParamStyle {
    /// Write absent filters as `""` instead of leaving them out.
    pub send_absent: bool,
    /// Integers as strings or numbers.
    pub ints: IntParams,
    /// Unit of `amount`.
    pub amount_unit: AmountUnit,
}

/// `Params`, in the spec's order.
#[derive(Serialize)]
struct Params {
    user_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_pay_page: Option<Value>,
    shopping: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    checked: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_store_sn: Option<Value>,
}

/// The `expire` filter value of a coupon state.
pub fn expire_value(status: CouponStatus) -> &'static str {
    match status {
        CouponStatus::Usable => "canuse",
        CouponStatus::Used => "used",
        CouponStatus::Expired => "expired",
    }
}

impl ParamStyle {
    /// The serialized `Params` of one query; `Err` when the member id is not the integer
    /// the platform's `user_id` is.
    pub fn encode(&self, query: &MemberCouponQuery) -> Result<Bytes, MapError> {
        let user_id = member_number(&query.member_id)?;
        let params = Params {
            user_id: self.int(user_id, &query.member_id),
            from_pay_page: self.absent(),
            shopping: self.int(0, "0"),
            checked: self.absent(),
            expire: self.filter(query.status.map(|s| Value::from(expire_value(s)))),
            amount: self.filter(query.min_amount_cents.map(|c| self.amount(c))),
            multi_store_sn: self.filter(query.store_sn.clone().map(Value::from)),
        };
        serde_json::to_vec(&params)
            .map(Bytes::from)
            .map_err(|e| MapError::new("data", format!("cannot serialize zvcms params: {e}")))
    }

    fn amount(&self, cents: u64) -> Value {
        let amount = self.amount_unit.from_cents(cents);
        self.int(amount, &amount.to_string())
    }

    fn int(&self, value: u64, text: &str) -> Value {
        match self.ints {
            IntParams::String => Value::from(text),
            IntParams::Number => Value::from(value),
        }
    }

    fn filter(&self, value: Option<Value>) -> Option<Value> {
        value.or_else(|| self.absent())
    }

    fn absent(&self) -> Option<Value> {
        self.send_absent.then(|| Value::from(""))
    }
}

/// The member id as the platform's integer `user_id`.
fn member_number(member_id: &str) -> Result<u64, MapError> {
    let digits = !member_id.is_empty() && member_id.bytes().all(|b| b.is_ascii_digit());
    match member_id.parse::<u64>() {
        Ok(n) if digits && n > 0 => Ok(n),
        _ => Err(MapError::new(
            "data.member_id",
            "zvcms user_id is a positive integer: the member id must be digits only",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC_PARAMS: &str = r#"{ "user_id": "", "from_pay_page": "", "shopping": "", "checked": "[{\"bar_code\":\"P5C503FB51B4843301\",\"offline_price\":120,\"buy_num\":2},{\"bar_code\":\"P5C503FB51C2F96986\",\"offline_price\":20,\"buy_num\":2}]", "expire": "", "amount": "", "multi_store_sn": "" }"#;

    const DEFAULT: ParamStyle =
        ParamStyle { send_absent: true, ints: IntParams::String, amount_unit: AmountUnit::Yuan };

    fn query(member: &str) -> MemberCouponQuery {
        MemberCouponQuery { member_id: member.into(), status: None, min_amount_cents: None, store_sn: None }
    }

    fn encoded(style: ParamStyle, q: &MemberCouponQuery) -> Value {
        serde_json::from_slice(&style.encode(q).unwrap()).unwrap()
    }

    #[test]
    fn bare_query_has_the_spec_examples_shape() {
        let spec: Value = serde_json::from_str(SPEC_PARAMS).unwrap();
        let ours = encoded(DEFAULT, &query("1001"));
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&spec));
        let expected = json!({"user_id": "1001", "from_pay_page": "", "shopping": "0", "checked": "",
            "expire": "", "amount": "", "multi_store_sn": ""});
        assert_eq!(ours, expected);
    }

    #[test]
    fn filters_are_mapped() {
        let q = MemberCouponQuery {
            member_id: "88001".into(),
            status: Some(CouponStatus::Usable),
            min_amount_cents: Some(15_099),
            store_sn: Some("S-12".into()),
        };
        let expected = json!({"user_id": "88001", "from_pay_page": "", "shopping": "0", "checked": "",
            "expire": "canuse", "amount": "150", "multi_store_sn": "S-12"});
        assert_eq!(encoded(DEFAULT, &q), expected);
        let fen = ParamStyle { amount_unit: AmountUnit::Fen, ..DEFAULT };
        assert_eq!(encoded(fen, &q)["amount"], "15099");
        assert_eq!(expire_value(CouponStatus::Used), "used");
        assert_eq!(expire_value(CouponStatus::Expired), "expired");
    }

    #[test]
    fn numbers_and_omitted_filters() {
        let style = ParamStyle { send_absent: false, ints: IntParams::Number, amount_unit: AmountUnit::Yuan };
        let q = MemberCouponQuery { min_amount_cents: Some(10_000), ..query("1001") };
        assert_eq!(encoded(style, &q), json!({"user_id": 1001, "shopping": 0, "amount": 100}));
    }

    #[test]
    fn non_numeric_member_is_a_map_error() {
        for bad in ["M1001", "-5", "0", "+7", "1 2", "99999999999999999999999"] {
            let err = DEFAULT.encode(&query(bad)).unwrap_err();
            assert_eq!(err.field, "data.member_id", "{bad}");
        }
    }
}
