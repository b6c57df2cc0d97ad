//! The REST API's HTTP layer: thin handlers that decode a request, call a domain service and
//! encode its answer, the routes, and the OpenAPI 3.1 document generated from the handlers'
//! types (served at `/api/v1/openapi.json`). Errors become HTTP in one place, [`ApiError`].

use crate::app::AppState;
use crate::auth::{Authed, Login, LoginReply, Sessions, SignRequest, SignedUrl};
use crate::error::{ApiError, Body, ErrorBody, json_error};
use crate::model::{CameraView, CreateCamera, Grant, Share, UpdateCamera};
use crate::pool::GatewayView;
use crate::recordings::RecordingsView;
use crate::sites::{CreateSite, EnrollRequest, Enrolled, SiteView};
use crate::users::{ChangePassword, CreateUser, Role, UpdateUser, UserView};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use cloudcam_core::workers::WorkerInfo;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Registers the API, WebSocket, liveness and web UI routes (metrics and readiness are on the
/// internal listener).
pub fn routes(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.route("/healthz", web::get().to(cloudcam_core::ops::healthz));
    let json = web::JsonConfig::default()
        .limit(max_body)
        .error_handler(move |err, _| json_error(err, max_body));
    cfg.app_data(json)
        .app_data(web::PathConfig::default())
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi))
                .route("/login", web::post().to(login))
                .route("/logout", web::post().to(logout))
                .route("/signed-urls", web::post().to(sign_url))
                .route("/me", web::get().to(me))
                .route("/me/password", web::post().to(change_password))
                .route("/me/signout", web::post().to(sign_out_everywhere))
                .route("/users", web::get().to(list_users))
                .route("/users", web::post().to(create_user))
                .route("/users/{name}", web::patch().to(update_user))
                .route("/users/{name}/signout", web::post().to(sign_out_user))
                .route("/cameras", web::get().to(list_cameras))
                .route("/cameras", web::post().to(create_camera))
                .route("/cameras/{id}", web::get().to(get_camera))
                .route("/cameras/{id}", web::patch().to(update_camera))
                .route("/cameras/{id}", web::delete().to(delete_camera))
                .route(
                    "/cameras/{id}/push-credential",
                    web::post().to(new_push_credential),
                )
                .route("/cameras/{id}/shares", web::get().to(shares))
                .route("/cameras/{id}/shares/{user}", web::put().to(share))
                .route("/cameras/{id}/shares/{user}", web::delete().to(unshare))
                .route("/cameras/{id}/recordings", web::get().to(recordings))
                .route("/cameras/{id}/clip", web::get().to(clip))
                .route("/cameras/{id}/snapshot", web::get().to(snapshot))
                .route("/cameras/{id}/snapshot", web::post().to(request_snapshot))
                .route("/sites", web::get().to(list_sites))
                .route("/sites", web::post().to(create_site))
                .route("/sites/{id}", web::get().to(get_site))
                .route("/sites/{id}", web::delete().to(delete_site))
                .route("/sites/{id}/enrollment", web::post().to(new_enrollment))
                .route("/sites/{id}/revoke", web::post().to(revoke_site))
                .route("/edge/enroll", web::post().to(enroll))
                .route("/edge/ws", web::get().to(crate::edge::connect))
                .route("/workers", web::get().to(workers))
                .route("/ws", web::get().to(crate::ws::connect))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound("no such API endpoint".into()))
                })),
        )
        .route("/", web::get().to(crate::web::index))
        .route("/app.js", web::get().to(crate::web::script))
        .route("/style.css", web::get().to(crate::web::style));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloudcam API",
        description = "Cameras, live view signalling, recordings and workers. Every endpoint but \
                       `/login` and this document needs `Authorization: Bearer <token>`; errors \
                       are `ErrorBody`."
    ),
    paths(
        login, logout, sign_url, me, change_password, sign_out_everywhere, list_users, create_user,
        update_user, sign_out_user, list_cameras, create_camera, get_camera, update_camera,
        delete_camera, new_push_credential, shares, share, unshare, recordings, clip, snapshot,
        request_snapshot, list_sites, create_site, get_site, delete_site, new_enrollment,
        revoke_site, enroll, workers
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// `ETag` of a camera version, and the version an `If-Match` names.
fn etag(version: u64) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{version}\""))
}

fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(raw) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or_default().trim();
    if raw == "*" {
        return Ok(None);
    }
    raw.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            ApiError::BadRequest(
                "invalid_if_match",
                "If-Match must be a camera's ETag (a quoted version number) or *".into(),
            )
        })
}

/// Sign in; returns a bearer token. Failures are throttled per client address and per user
/// name (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/v1/login", request_body = Login,
    responses((status = 200, body = LoginReply), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("Retry-After" = String)))))]
async fn login(
    sessions: web::Data<Sessions>,
    req: HttpRequest,
    Body(body): Body<Login>,
) -> Result<HttpResponse, ApiError> {
    let client = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(sessions.login(&client, &body).await?))
}

/// Who the token belongs to.
#[derive(Serialize, ToSchema)]
pub struct MeView {
    pub user: String,
    pub role: Role,
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = ErrorBody)))]
async fn me(authed: Authed) -> HttpResponse {
    HttpResponse::Ok().json(MeView {
        user: authed.caller.name,
        role: authed.caller.role,
    })
}

/// Change your own password; every token of yours stops working (sign in again).
#[utoipa::path(post, path = "/api/v1/me/password", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn change_password(
    app: web::Data<AppState>,
    authed: Authed,
    Body(body): Body<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    app.users.change_password(&authed.caller.name, body).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sign out everywhere: every token of yours stops working and your WebSockets close.
#[utoipa::path(post, path = "/api/v1/me/signout", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn sign_out_everywhere(
    app: web::Data<AppState>,
    authed: Authed,
) -> Result<HttpResponse, ApiError> {
    app.users
        .revoke(&authed.caller, &authed.caller.name)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every user (administrators only).
#[utoipa::path(get, path = "/api/v1/users", security(("bearer" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_users(app: web::Data<AppState>, authed: Authed) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.users.list(&authed.caller).await?))
}

/// Add a user (administrators only).
#[utoipa::path(post, path = "/api/v1/users", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_user(
    app: web::Data<AppState>,
    authed: Authed,
    Body(body): Body<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(app.users.create(&authed.caller, body).await?))
}

/// Change a user's role, disable them or reset their password (administrators only); disabling
/// or a new password signs them out everywhere.
#[utoipa::path(patch, path = "/api/v1/users/{name}", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update_user(
    app: web::Data<AppState>,
    authed: Authed,
    name: web::Path<String>,
    Body(body): Body<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.users.update(&authed.caller, &name, body).await?))
}

/// Sign a user out everywhere (administrators only).
#[utoipa::path(post, path = "/api/v1/users/{name}/signout", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn sign_out_user(
    app: web::Data<AppState>,
    authed: Authed,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    app.users.revoke(&authed.caller, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Who a camera is shared with, and what each may do (its managers only).
#[utoipa::path(get, path = "/api/v1/cameras/{id}/shares", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id")),
    responses((status = 200, body = [Share]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn shares(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.shares(&authed.caller, &id).await?))
}

/// Share a camera with a user: `live`, `playback` and/or `manage` (which brings the others).
/// All false ends the share; the user's running views of it end within a second.
#[utoipa::path(put, path = "/api/v1/cameras/{id}/shares/{user}", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"),
        ("user" = String, Path, description = "user name")),
    request_body = Grant,
    responses((status = 200, body = [Share]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn share(
    app: web::Data<AppState>,
    authed: Authed,
    path: web::Path<(String, String)>,
    Body(grant): Body<Grant>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    Ok(HttpResponse::Ok().json(app.cameras.share(&authed.caller, &id, &user, grant).await?))
}

/// End a user's share of a camera.
#[utoipa::path(delete, path = "/api/v1/cameras/{id}/shares/{user}", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"),
        ("user" = String, Path, description = "user name")),
    responses((status = 200, body = [Share]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unshare(
    app: web::Data<AppState>,
    authed: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    let none = Grant::default();
    Ok(HttpResponse::Ok().json(app.cameras.share(&authed.caller, &id, &user, none).await?))
}

/// Sign out: the token stops working at once.
#[utoipa::path(post, path = "/api/v1/logout", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(sessions: web::Data<Sessions>, authed: Authed) -> Result<HttpResponse, ApiError> {
    sessions.logout(&authed).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A URL for a resource a browser fetches without headers (a snapshot `<img>`, a clip
/// download, the WebSocket), valid for minutes and only for the caller and that path.
#[utoipa::path(post, path = "/api/v1/signed-urls", security(("bearer" = [])),
    request_body = SignRequest,
    responses((status = 200, body = SignedUrl), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn sign_url(
    sessions: web::Data<Sessions>,
    authed: Authed,
    body: web::Json<SignRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(sessions.sign(&authed.caller, &body.path).await?))
}

/// Every camera, oldest first.
#[utoipa::path(get, path = "/api/v1/cameras", security(("bearer" = [])),
    responses((status = 200, body = [CameraView]), (status = 401, body = ErrorBody)))]
async fn list_cameras(app: web::Data<AppState>, authed: Authed) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.list(&authed.caller).await?))
}

/// Add a camera (pulled on demand unless it records or is always on), or a camera that pushes
/// its stream (`push`: the answer holds its push credential, once).
#[utoipa::path(post, path = "/api/v1/cameras", security(("bearer" = [])), request_body = CreateCamera,
    responses((status = 201, body = CameraView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_camera(
    app: web::Data<AppState>,
    authed: Authed,
    Body(body): Body<CreateCamera>,
) -> Result<HttpResponse, ApiError> {
    let view = app.cameras.create(&authed.caller, body).await?;
    Ok(HttpResponse::Created()
        .insert_header(etag(view.version))
        .json(view))
}

/// One camera; its `ETag` is the record's version.
#[utoipa::path(get, path = "/api/v1/cameras/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id")),
    responses((status = 200, body = CameraView, headers(("ETag" = String))),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_camera(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = app.cameras.get(&authed.caller, &id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(view.version))
        .json(view))
}

/// The public URL of this service as the caller reached it (for the enrollment command).
fn server_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// The edge sites the caller may manage (every one for an administrator), with their agents.
#[utoipa::path(get, path = "/api/v1/sites", security(("bearer" = [])),
    responses((status = 200, body = Vec<SiteView>), (status = 401, body = ErrorBody)))]
async fn list_sites(app: web::Data<AppState>, authed: Authed) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.sites.list(&authed.caller).await?))
}

/// Add an edge site (a place whose cameras the cloud cannot reach). The answer holds its
/// one-time enrollment token and the command that enrolls the site's agent, once.
#[utoipa::path(post, path = "/api/v1/sites", security(("bearer" = [])), request_body = CreateSite,
    responses((status = 201, body = SiteView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_site(
    app: web::Data<AppState>,
    authed: Authed,
    req: HttpRequest,
    Body(body): Body<CreateSite>,
) -> Result<HttpResponse, ApiError> {
    let view = app
        .cameras
        .sites
        .create(&authed.caller, body, &server_url(&req))
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// One site and its agent (online, version, cameras pushed, uplink bitrate).
#[utoipa::path(get, path = "/api/v1/sites/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "site id")),
    responses((status = 200, body = SiteView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_site(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.sites.get(&authed.caller, &id).await?))
}

/// Delete a site that has no cameras left (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/sites/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "site id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn delete_site(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    app.cameras.sites.delete(&authed.caller, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new one-time enrollment token for the site (shown once): the agent that uses it replaces
/// the enrolled one.
#[utoipa::path(post, path = "/api/v1/sites/{id}/enrollment", security(("bearer" = [])),
    params(("id" = String, Path, description = "site id")),
    responses((status = 200, body = SiteView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn new_enrollment(
    app: web::Data<AppState>,
    authed: Authed,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = app
        .cameras
        .sites
        .new_enrollment(&authed.caller, &id, &server_url(&req))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Revoke the site's agent: its connection closes, and every push credential it was given
/// stops working. A new enrollment brings the site back.
#[utoipa::path(post, path = "/api/v1/sites/{id}/revoke", security(("bearer" = [])),
    params(("id" = String, Path, description = "site id")),
    responses((status = 200, body = SiteView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn revoke_site(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.revoke_site(&authed.caller, &id).await?))
}

/// An edge agent trades its one-time enrollment token for its site's agent credential (no
/// user token: the enrollment token is the authorization). Then it connects to
/// `/api/v1/edge/ws` with `Authorization: Bearer <credential>`.
#[utoipa::path(post, path = "/api/v1/edge/enroll", request_body = EnrollRequest,
    responses((status = 200, body = Enrolled), (status = 400, body = ErrorBody)))]
async fn enroll(
    app: web::Data<AppState>,
    body: Body<EnrollRequest>,
) -> Result<HttpResponse, ApiError> {
    crate::edge::enroll(app, body).await
}

/// Give a pushed camera a new push credential (in the answer only, never shown again): the
/// old one stops working and a push made with it is cut.
#[utoipa::path(post, path = "/api/v1/cameras/{id}/push-credential", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id")),
    responses((status = 200, body = CameraView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn new_push_credential(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = app.cameras.new_push_credential(&authed.caller, &id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(view.version))
        .json(view))
}

/// Change some fields of a camera. With `If-Match: "<version>"` only that version is changed
/// (412 otherwise); without, the change applies to the latest version.
#[utoipa::path(patch, path = "/api/v1/cameras/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"),
        ("If-Match" = Option<String>, Header, description = "the ETag the change is based on")),
    request_body = UpdateCamera,
    responses((status = 200, body = CameraView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn update_camera(
    app: web::Data<AppState>,
    authed: Authed,
    req: HttpRequest,
    id: web::Path<String>,
    Body(body): Body<UpdateCamera>,
) -> Result<HttpResponse, ApiError> {
    let view = app
        .cameras
        .update(&authed.caller, &id, body, if_match(&req)?)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(view.version))
        .json(view))
}

/// Remove a camera (its recordings stay until their retention ends).
#[utoipa::path(delete, path = "/api/v1/cameras/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"),
        ("If-Match" = Option<String>, Header, description = "delete only this version")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody)))]
async fn delete_camera(
    app: web::Data<AppState>,
    authed: Authed,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    app.cameras
        .delete(&authed.caller, &id, if_match(&req)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A time range, in ms since the epoch.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    /// A signed URL's user, expiry and signature (see `POST /api/v1/signed-urls`), for
    /// `<video src>` and downloads (browsers cannot set a header there).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub sig: Option<String>,
    /// Serve as an attachment.
    #[serde(default)]
    pub download: Option<bool>,
}

/// The camera's indexed segments and continuous spans in a range.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/recordings", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"), Range),
    responses((status = 200, body = RecordingsView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn recordings(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let view = app
        .recordings
        .list(&authed.caller, &id, range.from, range.to)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// One MP4 of the range, rounded out to keyframes and cut at the first gap; its actual bounds
/// are in `X-Cloudcam-Clip-Start-Ms` / `-End-Ms`.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/clip", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id"), Range),
    responses((status = 200, content_type = "video/mp4", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn clip(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let clip = app
        .recordings
        .clip(&authed.caller, &id, range.from, range.to)
        .await?;
    let (start, end) = (clip.start_ms, clip.end_ms);
    let mut res = HttpResponse::Ok();
    res.content_type("video/mp4")
        .insert_header(("X-Cloudcam-Clip-Start-Ms", start.to_string()))
        .insert_header(("X-Cloudcam-Clip-End-Ms", end.to_string()))
        .insert_header((
            "Access-Control-Expose-Headers",
            "X-Cloudcam-Clip-Start-Ms, X-Cloudcam-Clip-End-Ms",
        ));
    if range.download == Some(true) {
        res.insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{id}-{start}-{end}.mp4\""),
        ));
    }
    // Streamed from its file; the scratch directory goes when the stream is dropped (sent, or
    // the client went away).
    let guard = clip.guard;
    let body = tokio_util::io::ReaderStream::new(clip.file).map(move |chunk| {
        let _ = &guard;
        chunk
    });
    Ok(res.no_chunking(clip.len).streaming(body))
}

/// The camera's latest snapshot.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/snapshot", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id")),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn snapshot(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let jpeg = app.recordings.snapshot(&authed.caller, &id).await?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", "no-store"))
        .body(jpeg))
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotRequested {
    pub requested: bool,
}

/// Ask the owning ingest worker for a snapshot now.
#[utoipa::path(post, path = "/api/v1/cameras/{id}/snapshot", security(("bearer" = [])),
    params(("id" = String, Path, description = "camera id")),
    responses((status = 202, body = SnapshotRequested), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn request_snapshot(
    app: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    app.recordings.request_snapshot(&authed.caller, &id).await?;
    Ok(HttpResponse::Accepted().json(SnapshotRequested { requested: true }))
}

/// Live ingest workers and recorders, and the Janus gateways.
#[derive(Serialize, ToSchema)]
pub struct WorkersView {
    pub workers: Vec<WorkerInfo>,
    pub gateways: Vec<GatewayView>,
}

/// Live ingest workers and recorders (with their cameras) and the Janus gateways (with their
/// health). Administrators only.
#[utoipa::path(get, path = "/api/v1/workers", security(("bearer" = [])),
    responses((status = 200, body = WorkersView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn workers(app: web::Data<AppState>, authed: Authed) -> Result<HttpResponse, ApiError> {
    authed.caller.require_admin()?;
    Ok(HttpResponse::Ok().json(WorkersView {
        workers: cloudcam_core::workers::list(&*app.state).await?,
        gateways: app.pool().views(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_its_schemas() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/api/v1/cameras",
            "/api/v1/cameras/{id}",
            "/api/v1/cameras/{id}/recordings",
            "/api/v1/workers",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let schemas = &doc["components"]["schemas"];
        for s in ["CameraView", "CameraStatus", "ErrorBody", "WorkersView"] {
            assert!(schemas[s].is_object(), "{s} missing");
        }
    }

    #[test]
    fn if_match_takes_an_etag() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::IF_MATCH, "\"7\""))
            .to_http_request();
        assert_eq!(if_match(&req).unwrap(), Some(7));
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::IF_MATCH, "seven"))
            .to_http_request();
        assert_eq!(if_match(&req).unwrap_err().code(), "invalid_if_match");
    }
}
