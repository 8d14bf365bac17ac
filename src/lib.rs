//! rampart: an uncomplicated host firewall for Linux.
//!
//! The pipeline, one module per stage:
//! `cli` → `grammar` → `model` ⇄ `store` → `compile` → `backend`, with `apply` the one
//! path of every change (store and kernel kept in agreement), `observe` for what the
//! user reads and `render` for the one text form of a plan.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod compile;
pub mod grammar;
pub mod import;
pub mod interpret;
pub mod model;
pub mod observe;
pub mod render;
pub mod store;
