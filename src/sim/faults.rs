//! Faults a config id asks for by its markers (`err500`, `hugebody`, ...), and
//! the constants tests compare what reached them against.

#[derive(Clone, Copy, Default)]
pub(crate) struct Faults {
    pub(crate) err500: bool,
    pub(crate) errempty: bool,
    pub(crate) errhtml: bool,
    pub(crate) malformed: bool,
    pub(crate) timeout: bool,
    pub(crate) deprecated: bool,
    pub(crate) redirect: bool,
    pub(crate) hugebody: bool,
    pub(crate) retryafterhuge: bool,
    pub(crate) slowstart: bool,
}

/// Where `redirect` points: a cloud metadata address, what an attacker would pick.
pub const REDIRECT_TARGET: &str =
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
/// The body that goes with the redirect: must never reach a status.
pub const REDIRECT_BODY: &str = "redirected-secret-body";
/// Bytes of padding `hugebody` adds to a successful answer (past the client's 8 MiB).
pub const HUGE_BODY_BYTES: usize = 9 * 1024 * 1024;
/// Bytes of the messages of `hugeerror` and `hugereject`.
pub const HUGE_MESSAGE_BYTES: usize = 3 * 1024 * 1024;

impl Faults {
    pub(crate) fn for_config(config_id: &str) -> Faults {
        let id = config_id.to_ascii_lowercase();
        Faults {
            err500: id.contains("err500"),
            errempty: id.contains("errempty"),
            errhtml: id.contains("errhtml"),
            malformed: id.contains("malformed"),
            timeout: id.contains("timeout"),
            deprecated: id.contains("deprecated"),
            redirect: id.contains("redirect"),
            hugebody: id.contains("hugebody"),
            retryafterhuge: id.contains("retryafterhuge"),
            slowstart: id.contains("slowstart"),
        }
    }
}
