//! The operator's side (`docs/ADMIN.md`): the admin API (`api`), the live connections it
//! lists (`crate::connections`), and the dashboard with its stats stream (`dashboard`).

pub mod api;
pub mod dashboard;
