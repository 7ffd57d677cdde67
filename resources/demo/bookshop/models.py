"""A small bookshop: enough relations to show every ORM pattern from the talk."""

from __future__ import annotations

from django.db import models


class Publisher(models.Model):
    name = models.CharField(max_length=100)
    country = models.CharField(max_length=60)

    def __str__(self) -> str:
        return self.name


class Author(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField()
    bio = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class AuthorProfile(models.Model):
    author = models.OneToOneField(Author, on_delete=models.CASCADE, related_name="profile")
    website = models.URLField(blank=True)
    twitter = models.CharField(max_length=50, blank=True)


class Tag(models.Model):
    name = models.CharField(max_length=40, unique=True)

    class Meta:
        # Stable order for ``book.tags.all`` with and without ``prefetch_related``.
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    isbn = models.CharField(max_length=17)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    publisher = models.ForeignKey(
        Publisher, null=True, blank=True, on_delete=models.SET_NULL, related_name="books"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="books")
    pages = models.PositiveIntegerField(default=100)
    price = models.DecimalField(max_digits=7, decimal_places=2, default=10)
    published = models.BooleanField(default=True)
    published_on = models.DateField(null=True, blank=True)
    views = models.PositiveIntegerField(default=0)
    summary = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.CharField(max_length=80)
    rating = models.PositiveSmallIntegerField()
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class Visit(models.Model):
    """Written in the request path by the slow-write pages."""

    path = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
