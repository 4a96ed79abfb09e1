//! The course-subscription domain of disintegrate's own examples, shared by the tests.
#![allow(dead_code, clippy::unwrap_used)]

use disintegrate::{Decision, StateMutate, StateQuery};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, disintegrate::Event, Serialize, Deserialize)]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
#[stream(StudentEvent, [StudentRegistered, StudentSubscribed])]
pub enum DomainEvent {
    CourseCreated {
        #[id]
        course_id: String,
        seats: u32,
    },
    StudentRegistered {
        #[id]
        student_id: String,
    },
    StudentSubscribed {
        #[id]
        course_id: String,
        #[id]
        student_id: String,
    },
}

#[derive(Default, StateQuery, Clone, Serialize, Deserialize, Debug, PartialEq)]
#[state_query(CourseEvent)]
pub struct Course {
    #[id]
    pub course_id: String,
    pub created: bool,
    pub seats: u32,
    pub subscribed: u32,
}

impl StateMutate for Course {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            CourseEvent::CourseCreated { seats, .. } => {
                self.created = true;
                self.seats = seats;
            }
            CourseEvent::StudentSubscribed { .. } => self.subscribed += 1,
        }
    }
}

#[derive(Default, StateQuery, Clone, Serialize, Deserialize, Debug, PartialEq)]
#[state_query(StudentEvent)]
pub struct Student {
    #[id]
    pub student_id: String,
    pub registered: bool,
    pub courses: u32,
}

impl StateMutate for Student {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            StudentEvent::StudentRegistered { .. } => self.registered = true,
            StudentEvent::StudentSubscribed { .. } => self.courses += 1,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("no such course")]
    NoCourse,
    #[error("no such student")]
    NoStudent,
    #[error("the course is full")]
    Full,
}

/// Subscribes a student to a course: the course must exist and have a free seat, the student
/// must be registered. Its state is a multi-state query: the course's and the student's.
pub struct Subscribe {
    pub course_id: String,
    pub student_id: String,
}

impl Subscribe {
    pub fn new(course: &str, student: &str) -> Self {
        Subscribe {
            course_id: course.into(),
            student_id: student.into(),
        }
    }
}

/// The domain error a decision was refused with, if that is how it failed.
pub fn domain_error<T>(
    result: Result<T, disintegrate::DecisionError<SubscribeError>>,
) -> Option<SubscribeError> {
    match result {
        Err(disintegrate::DecisionError::Domain(e)) => Some(e),
        _ => None,
    }
}

impl Decision for Subscribe {
    type Event = DomainEvent;
    type StateQuery = (Course, Student);
    type Error = SubscribeError;

    fn state_query(&self) -> Self::StateQuery {
        (
            Course {
                course_id: self.course_id.clone(),
                ..Default::default()
            },
            Student {
                student_id: self.student_id.clone(),
                ..Default::default()
            },
        )
    }

    fn process(
        &self,
        (course, student): &Self::StateQuery,
    ) -> Result<Vec<DomainEvent>, SubscribeError> {
        if !course.created {
            return Err(SubscribeError::NoCourse);
        }
        if !student.registered {
            return Err(SubscribeError::NoStudent);
        }
        if course.subscribed >= course.seats {
            return Err(SubscribeError::Full);
        }
        Ok(vec![DomainEvent::StudentSubscribed {
            course_id: self.course_id.clone(),
            student_id: self.student_id.clone(),
        }])
    }
}

pub fn created(course: &str, seats: u32) -> DomainEvent {
    DomainEvent::CourseCreated {
        course_id: course.into(),
        seats,
    }
}

pub fn registered(student: &str) -> DomainEvent {
    DomainEvent::StudentRegistered {
        student_id: student.into(),
    }
}

pub fn subscribed(course: &str, student: &str) -> DomainEvent {
    DomainEvent::StudentSubscribed {
        course_id: course.into(),
        student_id: student.into(),
    }
}
