//! What handlers read of a request: its query string (Docker's flags, numbers and
//! filters) and its JSON body, bounded.

use std::collections::BTreeMap;

use axum::extract::Request;
use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body read (a create body is a few kilobytes).
pub const MAX_BODY: usize = 1 << 20;

/// A request's query string.
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Docker's booleans: `1`, `true` and `True` are true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }

    /// Docker's time stamps (`since`, `until`): Unix seconds, perhaps with a fraction,
    /// as nanoseconds; a 400 naming the parameter for anything else (or a time beyond
    /// what nanoseconds hold).
    pub fn instant(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bad = || ApiError::bad_request(format!("invalid {key} {v:?}: give Unix seconds"));
        let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        let frac: u64 = frac.parse().map_err(|_| bad())?;
        secs.checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(frac))
            .map(Some)
            .ok_or_else(bad)
    }

    /// A number, or a 400 naming the parameter.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("invalid value for {key}: {v:?} is not a number"),
                    )
                })
            })
            .transpose()
    }
}

/// A request's JSON body, bounded; an empty body is the default.
pub async fn body<T: serde::de::DeserializeOwned + Default>(req: Request) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
}

/// Docker's filters: `{"key":["v",...]}` (or the older `{"key":{"v":true}}`).
pub fn filters(q: &Query) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let Some(raw) = q.get("filters").filter(|f| !f.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let v: BTreeMap<String, Value> = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
    let mut out = BTreeMap::new();
    for (k, v) in v {
        let values = match v {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::Object(o) => o.into_iter().map(|(k, _)| k).collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k, values);
    }
    Ok(out)
}

/// Docker's `label` filter: every value given (`KEY` or `KEY=VALUE`) must hold (unlike
/// the other filters, whose values are alternatives); `get` looks a label up.
pub fn labels_match<'a>(values: &[String], get: impl Fn(&str) -> Option<&'a str>) -> bool {
    values.iter().all(|want| match want.split_once('=') {
        Some((k, v)) => get(k) == Some(v),
        None => get(want).is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_are_seconds_with_a_fraction_and_bounded() {
        let q = |v: &str| Query(vec![("since".into(), v.into())]);
        assert_eq!(q("12").instant("since").unwrap(), Some(12_000_000_000));
        assert_eq!(q("12.5").instant("since").unwrap(), Some(12_500_000_000));
        assert_eq!(q("").instant("since").unwrap(), None);
        for bad in [
            "x",
            "1.x",
            "99999999999999999999",
            "18446744073709551615",
            "1.0000000001",
        ] {
            assert!(q(bad).instant("since").is_err(), "{bad}");
        }
    }

    #[test]
    fn every_label_filter_must_hold() {
        let labels = [("project", "p"), ("service", "web")];
        let get = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(labels_match(&f(&["project=p", "service=web"]), get));
        assert!(labels_match(&f(&["project", "service=web"]), get));
        assert!(!labels_match(&f(&["project=p", "service=db"]), get));
        assert!(!labels_match(&f(&["other"]), get));
        assert!(labels_match(&f(&[]), get));
    }
}
