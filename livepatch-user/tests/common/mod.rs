pub mod exposition;
pub mod fixture;
