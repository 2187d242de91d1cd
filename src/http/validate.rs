//! Validation of names and header values from API.md.

use actix_web::HttpRequest;

use super::error::ApiError;

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
pub fn topic(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "topic name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        ))
    }
}

/// 1 to `max` characters of `[A-Za-z0-9._-]` (event types, producer ids).
pub fn token(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{what} must be 1 to {max} characters of [A-Za-z0-9._-]"
        )))
    }
}

/// An event type: a [`token`] of at most 64 characters that is not the name
/// of a broker notice, which every subscriber would take for the broker's
/// own (a forged gap or token expiry).
pub fn event_type(what: &str, value: &str) -> Result<(), ApiError> {
    token(what, value, 64)?;
    if sluice_actors::sse::RESERVED_EVENT_TYPES.contains(&value) {
        return Err(ApiError::bad(format!(
            "{what} {value:?} is reserved: the broker's own notices use {}",
            sluice_actors::sse::RESERVED_EVENT_TYPES
                .map(|t| format!("{t:?}"))
                .join(" and ")
        )));
    }
    Ok(())
}

/// 1 to 255 printable ASCII characters.
pub fn idempotency_key(value: &str) -> Result<(), ApiError> {
    let ok =
        !value.is_empty() && value.len() <= 255 && value.bytes().all(|c| (0x20..0x7f).contains(&c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ))
    }
}

/// A header as text; present but not visible ASCII is a 400.
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{name} header is not printable ASCII"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(topic("orders").is_ok());
        assert!(topic("a.b_c-D9").is_ok());
        assert!(topic(&"a".repeat(128)).is_ok());
        assert!(topic(&"a".repeat(129)).is_err());
        for bad in ["", "-x", ".x", "a b", "a/b", "é"] {
            assert!(topic(bad).is_err(), "{bad}");
        }
    }
}
