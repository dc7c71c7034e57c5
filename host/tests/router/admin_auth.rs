//! Admin authentication on every admin route.

use super::*;

#[tokio::test]
async fn admin_routes_refuse_a_missing_token_with_401() {
    let app = app().await;
    assert_all_admin_refused(&app, None).await;
    // A token without the Bearer scheme counts as missing.
    let mut request = get("/v1/policies");
    request.headers_mut().insert(header::AUTHORIZATION, TOKEN.parse().unwrap());
    assert_error(&send(&app, request).await, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn admin_routes_refuse_a_wrong_token_with_401() {
    let app = app().await;
    assert_all_admin_refused(&app, Some("s3cret-admin-toke")).await;
    assert_all_admin_refused(&app, Some("")).await;
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn admin_routes_are_closed_when_no_token_is_configured() {
    let app = app_with(settings(), Auth::with_admin_token(None), DEFAULT_MAX_BODY).await;
    assert_all_admin_refused(&app, Some(TOKEN)).await;
    assert_all_admin_refused(&app, None).await;
    let app = app_with(settings(), Auth::with_admin_token(Some("")), DEFAULT_MAX_BODY).await;
    assert_all_admin_refused(&app, Some("")).await;
}
