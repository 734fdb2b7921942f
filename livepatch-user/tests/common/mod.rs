pub mod cli;
pub mod exposition;
pub mod fixture;
pub mod json_schema;
