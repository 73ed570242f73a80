"""dermvqa.model"""
