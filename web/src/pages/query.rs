//! `/query`: the read-only SQL console.

use super::*;

#[derive(Template)]
#[template(path = "query.html")]
struct QueryPage {
    title: String,
    now: String,
    refresh: bool,
}

/// `/query`: the read-only SQL console.
pub async fn query(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Page(QueryPage { title: "query".into(), now: format_rfc3339_ms(state.clock.now_ms()), refresh: false })
        .into_response())
}
