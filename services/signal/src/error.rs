//! The HTTP edge's error kind: every failure maps to a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}` naming the problem.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};

/// The body of every error response.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`invalid_url`, `camera_not_found`, …).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("a valid token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("wrong username or password")]
    BadLogin,
    #[error("no camera with id {0}")]
    CameraNotFound(String),
    #[error("no user named {0}")]
    UserNotFound(String),
    #[error("no site with id {0}")]
    SiteNotFound(String),
    /// The caller sees the resource but may not do this with it.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed sign-ins; retry after this many seconds.
    #[error("too many failed sign-ins; try again in {0} s")]
    Throttled(u64),
    #[error("{0}")]
    NotFound(String),
    /// The caller has this many live views open already.
    #[error("at most {0} live views may be open at once; stop one first")]
    TooManyViews(usize),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Conflict(String),
    /// The camera cannot be watched live in a browser (its status says why).
    #[error("{0}")]
    LiveUnavailable(String),
    /// `If-Match` named another version than the stored one (which is given).
    #[error("the camera changed meanwhile (now at version {0}); reload it and try again")]
    PreconditionFailed(u64),
    #[error("{0}; try again")]
    Busy(String),
    #[error("shared state unavailable: {0}")]
    State(cloudcam_core::state::StateError),
    #[error("event bus unavailable: {0}")]
    Bus(#[from] cloudcam_core::bus::BusError),
    #[error("media store: {0}")]
    Media(String),
    #[error("video gateway error: {0}")]
    Janus(#[from] crate::janus::JanusError),
}

impl From<cloudcam_core::state::StateError> for ApiError {
    fn from(e: cloudcam_core::state::StateError) -> Self {
        match e {
            cloudcam_core::state::StateError::Busy(what) => Self::Busy(what),
            other => Self::State(other),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(code, _) => code,
            Self::Unauthorized => "unauthorized",
            Self::BadLogin => "bad_credentials",
            Self::CameraNotFound(_) => "camera_not_found",
            Self::UserNotFound(_) => "user_not_found",
            Self::SiteNotFound(_) => "site_not_found",
            Self::Forbidden(_) => "forbidden",
            Self::Throttled(_) => "too_many_attempts",
            Self::TooManyViews(_) => "too_many_views",
            Self::NotFound(_) => "not_found",
            Self::TooLarge(_) => "body_too_large",
            Self::Conflict(_) => "conflict",
            Self::LiveUnavailable(_) => "live_unavailable",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::Busy(_) => "busy",
            Self::State(_) => "state_unavailable",
            Self::Bus(_) => "bus_unavailable",
            Self::Janus(_) => "gateway_error",
            Self::Media(_) => "media_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(..) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::BadLogin => StatusCode::UNAUTHORIZED,
            Self::CameraNotFound(_)
            | Self::UserNotFound(_)
            | Self::SiteNotFound(_)
            | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Throttled(_) | Self::TooManyViews(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) | Self::LiveUnavailable(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::State(_) | Self::Bus(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Janus(_) | Self::Media(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Self::Throttled(secs) = self {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.client_message(),
            },
        })
    }
}

impl ApiError {
    /// What a client is told. A failure of a dependency is logged in full here and told
    /// without its detail, which names internal addresses (Redis, Kafka, Janus, S3 URLs).
    pub fn client_message(&self) -> String {
        let generic = match self {
            Self::State(_) => "the shared state (Redis) is unavailable; try again",
            Self::Bus(_) => "the event bus (Kafka) is unavailable; try again",
            Self::Janus(_) => "the video gateway failed; try again",
            Self::Media(_) => "the media store failed; try again",
            _ => return self.to_string(),
        };
        tracing::error!(code = self.code(), error = %self, "request failed");
        generic.into()
    }
}

/// Turns actix's JSON extractor errors into [`ApiError`]s with a useful message.
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::TooLarge(limit),
        E::ContentType => ApiError::BadRequest(
            "bad_content_type",
            "Content-Type must be application/json".into(),
        ),
        E::Deserialize(e) if e.is_data() => {
            ApiError::BadRequest("invalid_field", format!("invalid request body: {e}"))
        }
        E::Deserialize(e) => ApiError::BadRequest("malformed_json", format!("malformed JSON: {e}")),
        other => ApiError::BadRequest("bad_body", format!("unreadable request body: {other}")),
    };
    api.into()
}

/// A JSON request body deserialized into `T`; errors name the offending field
/// (`url: invalid type: integer, expected a string`).
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let json = actix_web::web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            serde_path_to_error::deserialize(value)
                .map(Body)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    let message = if path == "." {
                        format!("invalid request body: {inner}")
                    } else {
                        format!("invalid request body: {path}: {inner}")
                    };
                    ApiError::BadRequest("invalid_field", message).into()
                })
        })
    }
}
