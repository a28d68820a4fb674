//! The feed routes over a book, driven in-process with `tower::ServiceExt`.

mod http;
