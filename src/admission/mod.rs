//! AdmissionReview in, response out.
pub mod api;
