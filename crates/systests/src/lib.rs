//! Shared fixtures for the image and VM suites.
