"""stripe_api"""
